"""A CI fleet on one machine: N kanipy builds at once against one registry, R rounds.

Each round starts N ``kanipy build`` processes together, each pushing the same
small Dockerfile (busybox base, a COPY, a RUN) to its own tag of one
repository, as pipelines of one project do. It runs the rounds twice: every
build with its own blob store, then all builds sharing one ``--cache-dir``.
It prints, per mode, how many builds succeeded, the p50 and p95 build time,
and the registry errors seen: in kanipy's stderr (HTTP statuses it retried,
manifests it sent again, the error of a failed build) and in the registry's
log. The registry is Debian's ``docker-registry`` with filesystem storage,
started here on 127.0.0.1 (``tests/fixtures/registry.py``); the base image is
``tests/fixtures/images.py``'s busybox.

    .venv/bin/python benchmarks/bench_fleet.py                      # 16 builds x 3 rounds
    .venv/bin/python benchmarks/bench_fleet.py --builds 4 --rounds 2 --check

``--check`` exits 1 unless every build succeeded (the test suite runs it so);
``--kanipy-root DIR`` runs the kanipy of another checkout (before and after a
change).
Run as root: RUN steps need it, as they do for kanipy itself.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.images import build_and_push_busybox  # noqa: E402
from tests.fixtures.registry import Registry  # noqa: E402

DOCKERFILE = """\
FROM {base}
COPY app.txt /app/app.txt
RUN mkdir -p /srv && echo built > /srv/built.txt && wc -c /app/app.txt > /srv/size.txt
ENV APP=/app/app.txt
CMD ["cat", "/app/app.txt"]
"""

# What kanipy's stderr says about the registry (at --verbosity info).
_KANIPY_PATTERNS = [
    (re.compile(r"answered HTTP (\d{3}); retrying"), "retried HTTP {0}"),
    (re.compile(r"refused the manifest of \S+ \((\w+)\)"), "manifest sent again after {0}"),
    (re.compile(r"accepted manifest \S+ of \S+ but does not serve it"),
     "manifest not served, pushed again"),
    (re.compile(r"upload of \S+ to \S+ failed \((.{0,60})"), "upload restarted"),
    (re.compile(r"HTTP (\d{3}) \(registry said (\w+)"), "FAILED: HTTP {0} {1}"),
]
# The registry's log lines for requests that ended in an error (logfmt).
_REGISTRY_ERROR = re.compile(r'level=error .*?msg="response completed with error"')
_FIELD = re.compile(r'(err\.code|http\.request\.method|http\.response\.status)=("[^"]*"|\S+)')


@dataclass
class Round:
    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass
class ModeResult:
    name: str
    rounds: list[Round] = field(default_factory=list)
    kanipy_events: Counter[str] = field(default_factory=Counter)
    registry_errors: Counter[str] = field(default_factory=Counter)

    @property
    def builds(self) -> int:
        return sum(len(r.seconds) + len(r.failures) for r in self.rounds)

    @property
    def succeeded(self) -> int:
        return sum(len(r.seconds) for r in self.rounds)


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile (``p`` in 0-100) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def make_context(directory: Path, base: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    (directory / "app.txt").write_text("hello from the fleet\n" * 200)
    return directory


def kanipy_events(stderr: str) -> Counter[str]:
    events: Counter[str] = Counter()
    for line in stderr.splitlines():
        for pattern, label in _KANIPY_PATTERNS:
            match = pattern.search(line)
            if match:
                groups = [g.strip() for g in match.groups()]
                events[label.format(*groups)] += 1
    return events


def registry_errors(log_text: str) -> Counter[str]:
    errors: Counter[str] = Counter()
    for line in log_text.splitlines():
        if not _REGISTRY_ERROR.search(line):
            continue
        fields = {k: v.strip('"') for k, v in _FIELD.findall(line)}
        if fields.get("http.request.method") == "HEAD" and \
                fields.get("http.response.status") == "404":
            continue  # "not there yet": how every push asks before uploading
        errors[f"{fields.get('http.request.method', '?')} "
               f"{fields.get('http.response.status', '?')} "
               f"{fields.get('err.code', '?')}"] += 1
    return errors


def run_round(number: int, builds: int, context: Path, registry: Registry, work: Path,
              cache_dir: Path | None, repository: str, result: ModeResult,
              kanipy_root: Path, reproducible: bool) -> Round:
    """Start ``builds`` kanipy processes at once and wait for all of them."""
    outcome = Round()
    # cwd too: ``python -m`` puts the working directory before PYTHONPATH.
    env = {**os.environ, "PYTHONPATH": str(kanipy_root)}
    procs = []
    for i in range(builds):
        kdir = work / f"kanipy-{number}-{i}"
        argv = [sys.executable, "-m", "kanipy", "build", "--context", str(context),
                "--destination", f"{registry.host}/{repository}:r{number}-b{i}",
                "--insecure-registry", registry.host, "--kanipy-dir", str(kdir),
                "--verbosity", "info"]
        if reproducible:
            argv.append("--reproducible")
        if cache_dir is not None:
            argv += ["--cache-dir", str(cache_dir)]
        err = open(work / f"build-{number}-{i}.log", "w+b")  # noqa: SIM115 - closed below
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL, env=env, cwd=kanipy_root)
        procs.append((proc, err, started, kdir))
    for proc, err, started, kdir in procs:
        status = proc.wait()
        elapsed = time.monotonic() - started
        err.seek(0)
        stderr = err.read().decode(errors="replace")
        err.close()
        shutil.rmtree(kdir, ignore_errors=True)
        result.kanipy_events.update(kanipy_events(stderr))
        if status == 0:
            outcome.seconds.append(elapsed)
        else:
            last = stderr.strip().splitlines()[-1:] or ["(no output)"]
            outcome.failures.append(f"exit {status}: {last[0][:300]}")
    return outcome


def run_mode(name: str, shared: bool, builds: int, rounds: int, context: Path,
             registry: Registry, work: Path, kanipy_root: Path, reproducible: bool
             ) -> ModeResult:
    result = ModeResult(name)
    log = registry.directory / "registry.log"
    mode_work = work / name
    mode_work.mkdir(parents=True)
    cache_dir = mode_work / "cache" if shared else None
    for number in range(rounds):
        offset = log.stat().st_size
        outcome = run_round(number, builds, context, registry, mode_work, cache_dir,
                            f"fleet/{name}", result, kanipy_root, reproducible)
        with open(log, "rb") as f:
            f.seek(offset)
            result.registry_errors.update(registry_errors(f.read().decode(errors="replace")))
        result.rounds.append(outcome)
        print(f"  {name} round {number + 1}: {len(outcome.seconds)}/{builds} succeeded, "
              f"p50 {percentile(outcome.seconds, 50):.1f} s", file=sys.stderr)
        for failure in outcome.failures:
            print(f"    {failure}", file=sys.stderr)
    return result


def report(results: list[ModeResult], builds: int, rounds: int) -> str:
    lines = [f"{builds} concurrent builds x {rounds} rounds, one registry "
             "(docker-registry, filesystem storage)", "",
             "| mode | succeeded | per round | p50 s | p95 s |",
             "|---|---:|---|---:|---:|"]
    for r in results:
        seconds = [s for rnd in r.rounds for s in rnd.seconds]
        per_round = ", ".join(str(len(rnd.seconds)) for rnd in r.rounds)
        lines.append(f"| {r.name} | {r.succeeded}/{r.builds} | {per_round} | "
                     f"{percentile(seconds, 50):.1f} | {percentile(seconds, 95):.1f} |")
    for r in results:
        lines += ["", f"{r.name}: kanipy saw: " + _counts(r.kanipy_events),
                  f"{r.name}: registry logged: " + _counts(r.registry_errors)]
        for i, rnd in enumerate(r.rounds):
            lines += [f"{r.name} round {i + 1} failed: {f}" for f in rnd.failures]
    return "\n".join(lines)


def _counts(counter: Counter[str]) -> str:
    if not counter:
        return "nothing"
    return ", ".join(f"{label} x{n}" for label, n in counter.most_common())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--builds", type=int, default=16, help="concurrent builds (16)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode (3)")
    parser.add_argument("--modes", default="own-store,shared-cache-dir",
                        help="a subset of own-store,shared-cache-dir")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless every build succeeded")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--kanipy-root", type=Path, default=ROOT,
                        help="run kanipy from this checkout (to compare two versions)")
    parser.add_argument("--reproducible", action="store_true",
                        help="build with --reproducible: every build pushes the same blobs")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (build logs, registry log)")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - {"own-store", "shared-cache-dir"}
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")

    work = Path(tempfile.mkdtemp(prefix="kanipy-fleet-"))
    registry = Registry(work / "registry").start()
    try:
        base = build_and_push_busybox(work / "busybox", registry.host).oci
        context = make_context(work / "context", base)
        results = [run_mode(mode, mode == "shared-cache-dir", args.builds, args.rounds,
                            context, registry, work, args.kanipy_root.resolve(),
                            args.reproducible)
                   for mode in modes]
    finally:
        registry.stop()
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(report(results, args.builds, args.rounds))
    if args.json is not None:
        args.json.write_text(json.dumps([{
            "mode": r.name, "builds": r.builds, "succeeded": r.succeeded,
            "per_round": [len(rnd.seconds) for rnd in r.rounds],
            "seconds": [s for rnd in r.rounds for s in rnd.seconds],
            "failures": [f for rnd in r.rounds for f in rnd.failures],
            "kanipy_events": dict(r.kanipy_events), "registry_errors": dict(r.registry_errors),
        } for r in results], indent=2))
    if args.check and any(r.succeeded != r.builds for r in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
