"""Stages that read nothing of each other are built at the same time (issue 14, --jobs).

The proof of overlap is not a clock: the RUN steps of two stages each ask a loopback
HTTP server in the test (RUN shares the host's network), which answers nobody until
both have asked. Built one after another, the first step would wait for a second
that never comes, and the build would outlive the test's generous limit (``WAIT``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.build_support import processes_matching, tag_exists
from tests.e2e.helpers import (
    REPO,
    build,
    kanipy,
    skopeo_manifest,
    unpack_image,
    write_tree,
)
from tests.e2e.test_signals import _stop_and_check
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry
from tests.registry.servers import FaultProxy
from tests.terminal import on_a_terminal
from tests.tools import require_root

# How long a build may take before the test gives up on it: generous, never reached
# when the stages overlap. (busybox 1.35's ``wget -T`` crashes, so the limit is here.)
WAIT = 120


class Rendezvous:
    """A loopback HTTP server that answers ``GET /NAME`` only once every name in
    ``wanted`` has asked (a barrier), then answers each with ``NAME-ok``; the names in
    ``answer_now`` are answered at once (and count towards the barrier)."""

    def __init__(self, wanted: set[str], answer_now: set[str] = frozenset()) -> None:
        self.wanted = wanted
        self.answer_now = answer_now
        self.asked: list[str] = []
        self._held: list[tuple[socket.socket, str]] = []
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                request += chunk
            name = request.split(b" ")[1].decode().strip("/") if b" " in request else ""
            with self._lock:
                self.asked.append(name)
                if name in self.answer_now:
                    _answer(conn, name)
                else:
                    self._held.append((conn, name))
                if self.wanted <= set(self.asked):
                    for held, held_name in self._held:
                        _answer(held, held_name)
                    self._held = []

    def close(self) -> None:
        self._sock.close()
        for conn, _ in self._held:
            conn.close()


def _answer(conn: socket.socket, name: str) -> None:
    body = f"{name}-ok\n".encode()
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    conn.close()


@pytest.fixture
def rendezvous() -> Iterator[list[Rendezvous]]:
    made: list[Rendezvous] = []
    yield made
    for server in made:
        server.close()


def _two_builders(base: str, server: Rendezvous) -> str:
    """Two independent builder stages that must run at once, a final stage reading both."""
    return (
        f"FROM {base} AS left\n"
        f"RUN wget -q -O /left.txt {server.url('left')}\n"
        f"FROM {base} AS right\n"
        "ENV SIDE=right\n"
        f"RUN wget -q -O /right.txt {server.url('right')}\n"
        f"FROM {base}\n"
        "COPY --from=left /left.txt /out/\n"
        "COPY --from=right /right.txt /out/\n"
        "RUN cat /out/left.txt /out/right.txt > /out/both.txt\n"
    )


def _json_records(stderr: str) -> list[dict]:
    """Every stderr line as JSON: a line that is not fails the test."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def test_independent_stages_run_at_the_same_time(
        tmp_path: Path, registry: Registry, base_images: BaseImages,
        rendezvous: list[Rendezvous]) -> None:
    server = Rendezvous({"left", "right"})
    rendezvous.append(server)
    context = write_tree(tmp_path / "ctx", {"Dockerfile": _two_builders(base_images.oci,
                                                                        server)})
    dest = registry.ref("e2e/jobs:overlap")
    require_root()
    result = kanipy("build", "--context", str(context), "-d", dest, "--log-format", "json",
                    "--jobs", "2", timeout=WAIT).check()
    assert sorted(server.asked) == ["left", "right"]
    rootfs = unpack_image(dest, tmp_path / "out")
    assert (rootfs / "out" / "both.txt").read_text() == "left-ok\nright-ok\n"
    records = _json_records(result.stderr)
    # Each stage's events name it, so the interleaved log reads stage by stage.
    outputs = {(r["stage"], r["instruction"]) for r in records if r.get("event") == "step"}
    assert (1, f"RUN wget -q -O /left.txt {server.url('left')}") in outputs
    assert (2, f"RUN wget -q -O /right.txt {server.url('right')}") in outputs
    summary = [r for r in records if r.get("event") == "summary"][-1]
    # The summary is in stage order, whatever order the stages finished in.
    assert [(s["stage"], s["step"]) for s in summary["steps"]] == [
        (1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (3, 1), (3, 2), (3, 3), (3, 4)]


def test_jobs_1_and_the_default_build_the_same_image(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    """Under --reproducible the image is byte for byte the same, built at once or not."""
    base = base_images.oci
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base} AS one\n"
        "RUN mkdir -p /a && echo one > /a/one.txt && chmod 0640 /a/one.txt\n"
        "FROM scratch AS two\n"
        "COPY data.txt /b/\n"
        f"FROM {base} AS three\n"
        "RUN echo three > /three.txt\n"
        "FROM three\n"
        "COPY --from=one /a /a\n"
        "COPY --from=two /b /b\n"
        "ENV READY=1\n"
        # Modes, owners and sizes, not times: ``ls -l``'s minutes differ between two
        # builds either side of a minute's turn (the files' times are the build's).
        "RUN stat -c '%n %a %u %g %s' /a /a/one.txt /b /b/data.txt > /listing.txt\n"),
        "data.txt": "data\n"})
    digests = {}
    summaries = {}
    for jobs in ("1", None):
        dest = registry.ref(f"e2e/jobs:same-{jobs or 'default'}")
        args = ["-d", dest, "--reproducible", "--log-format", "json"]
        if jobs is not None:
            args += ["--jobs", jobs]
        result = build(context, *args).check()
        digests[jobs] = skopeo_manifest(dest)
        summary = [r for r in _json_records(result.stderr) if r.get("event") == "summary"]
        summaries[jobs] = [(s["stage"], s["step"], s["instruction"], s["layer_digest"])
                           for s in summary[-1]["steps"]]
    assert digests["1"] == digests[None]
    assert summaries["1"] == summaries[None]


def test_a_failing_stage_stops_the_others(
        tmp_path: Path, registry: Registry, base_images: BaseImages,
        rendezvous: list[Rendezvous]) -> None:
    """One stage's RUN fails while another's is running: that one is ended (no process
    left), the first failure is the one reported with its exit code, nothing is pushed,
    the work directory is emptied, and the JSON log stays JSON."""
    server = Rendezvous({"sleeper", "failer"}, answer_now={"sleeper"})
    rendezvous.append(server)
    marker = "sleep 9871"
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci} AS sleeper\n"
        f"RUN wget -q -O- {server.url('sleeper')} && {marker}\n"
        f"FROM {base_images.oci} AS failer\n"
        f"RUN wget -q -O- {server.url('failer')} && echo failing && exit 7\n"
        f"FROM {base_images.oci}\n"
        "COPY --from=sleeper /etc/passwd /a\n"
        "COPY --from=failer /etc/passwd /b\n")})
    dest = registry.ref("e2e/jobs:failed")
    workdir = tmp_path / "work"
    workdir.mkdir()
    require_root()
    result = kanipy("build", "--context", str(context), "-d", dest, "--log-format", "json",
                    "--kanipy-dir", str(workdir), timeout=WAIT)
    assert result.returncode == 1, result.stderr
    records = _json_records(result.stderr)
    error = records[-1]
    assert error["event"] == "error", error
    assert error["exit_code"] == 1 and error["exit_status"] == 7, error
    assert error["line"] == 4 and error["stage"] == 2, error
    assert "Dockerfile:4" in error["msg"] and "7" in error["msg"], error
    stopped = {r["stage"]: r for r in records if r.get("event") == "stopped"}
    # The sleeper was in its RUN; the final stage, from an image, started at once and
    # was somewhere before or at its COPY --from=sleeper, which waits for the sleeper.
    assert stopped[1]["line"] == 2 and set(stopped) <= {1, 3}, stopped
    assert not tag_exists(dest)
    assert [p.name for p in workdir.iterdir() if p.name != "run-cache"] == []
    _assert_gone([marker])


def _start(context: Path, workdir: Path) -> subprocess.Popen[bytes]:
    require_root()
    return subprocess.Popen(
        [sys.executable, "-m", "kanipy", "build", "-c", str(context), "--no-push",
         "--kanipy-dir", str(workdir), "--jobs", "2"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize(("signum", "code", "word"),
                         [(signal.SIGTERM, 143, "terminated"),
                          (signal.SIGINT, 130, "interrupted")], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_every_stage(tmp_path: Path, base_images: BaseImages,
                                    rendezvous: list[Rendezvous], signum: int, code: int,
                                    word: str) -> None:
    server = Rendezvous({"one", "two"}, answer_now={"one", "two"})
    rendezvous.append(server)
    markers = [f"sleep 98{signum}1", f"sleep 98{signum}2"]
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci} AS one\n"
        f"RUN wget -q -O- {server.url('one')} && {markers[0]}\n"
        f"FROM {base_images.oci} AS two\n"
        f"RUN wget -q -O- {server.url('two')} && {markers[1]}\n"
        f"FROM {base_images.oci}\n"
        "COPY --from=one /etc/passwd /a\n"
        "COPY --from=two /etc/passwd /b\n")})
    workdir = tmp_path / "work"
    workdir.mkdir()
    proc = _start(context, workdir)
    deadline = time.monotonic() + WAIT
    while not all(any("kanipy" not in p for p in processes_matching(m)) for m in markers):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("both steps never ran: "
                                 f"{proc.communicate()[1].decode(errors='replace')}")
        time.sleep(0.1)
    # Exit code, message, no traceback, an empty work directory (two stages: a longer wait).
    _stop_and_check(proc, signum, code, word, workdir, timeout=60)
    _assert_gone(markers)


def _assert_gone(markers: list[str]) -> None:
    """No process runs any of ``markers`` (the kernel reaps a PID namespace's processes
    as it tears it down, just after its init exits)."""
    deadline = time.monotonic() + 10
    while any(processes_matching(m) for m in markers) and time.monotonic() < deadline:
        time.sleep(0.1)
    for marker in markers:
        assert processes_matching(marker) == [], f"{marker} outlived the build"


def test_the_live_view_draws_both_running_steps_and_cancels_the_stopped_one(
        tmp_path: Path, base_images: BaseImages, rendezvous: list[Rendezvous]) -> None:
    """On a terminal: while both stages run, one frame shows both steps with their
    output; when one fails, the other's step is left as CANCELED, the failed one as
    ERROR with its output, as BuildKit leaves them."""
    server = Rendezvous({"left", "right"})
    rendezvous.append(server)
    left = f"RUN echo left-waiting && wget -q -O- {server.url('left')} && sleep 9861"
    right = f"RUN echo right-waiting && wget -q -O- {server.url('right')} && sleep 2 && exit 5"
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci} AS left\n{left}\n"
        f"FROM {base_images.oci} AS right\n{right}\n"
        f"FROM {base_images.oci}\n"
        "COPY --from=left /etc/passwd /a\n"
        "COPY --from=right /etc/passwd /b\n")})
    require_root()
    run = on_a_terminal(["build", "-c", str(context), "--no-push", "--jobs", "2"],
                        {"NO_COLOR": "1"}, timeout=WAIT)
    final = [line.rstrip() for line in run.screen.lines if line.strip()]
    assert run.status == 1, "\n".join(final)
    both = [frame for frame in run.screen.frames
            if any(line.startswith("=> [1/3] STEP 2/2: RUN echo left") for line in frame)
            and any(line.startswith("=> [2/3] STEP 2/2: RUN echo right") for line in frame)]
    assert both, "no frame showed both running steps"
    assert any(any("=> => # left-ok" in line for line in frame)
               and any("=> => # right-ok" in line for line in frame) for frame in both)
    canceled = [line for line in final if line.startswith("=> CANCELED [1/3] STEP 2/2")]
    assert len(canceled) == 1, final
    error = final.index(next(line for line in final if line.startswith("=> ERROR ")))
    assert final[error].startswith("=> ERROR [2/3] STEP 2/2: RUN echo right"), final
    assert final[error + 1:error + 5] == [
        "------", f" > [2/3] STEP 2/2: {right}:", "   right-waiting", "   right-ok"], final
    assert final[-1].startswith("kanipy: error: Dockerfile:4: ") and "exit code 5" in final[-1]
    _assert_gone(["sleep 9861"])


def test_two_stages_from_one_cached_stage_with_its_layer_lost(
        tmp_path: Path, base_images: BaseImages) -> None:
    """The layer cache's lazy roots under concurrent stages (issue 10): two stages built
    at once FROM one fully cached stage, both missing (a new SALT), need its root
    together; its cached layer is gone, so it is built again without hits, once, and
    the image is the one an uncached build gives."""
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        "ARG BASE\n"
        "FROM $BASE AS common\nRUN echo common > /common.txt\n"
        "FROM common AS left\nARG SALT\n"
        "RUN cat /common.txt > /left.txt && echo $SALT >> /left.txt\n"
        "FROM common AS right\nARG SALT\n"
        "RUN cat /common.txt > /right.txt && echo $SALT >> /right.txt\n"
        "FROM $BASE\nCOPY --from=left /left.txt /out/\nCOPY --from=right /right.txt /out/\n")})
    cache = tmp_path / "cache"

    def run(out: str, salt: str, *cached: str) -> list[dict]:
        result = build(context, "--no-push", "--reproducible", *cached, "--build-arg",
                       f"BASE={base_images.oci}", "--build-arg", f"SALT={salt}",
                       "--log-format", "json", "--jobs", "3", "--oci-layout-path",
                       str(tmp_path / out)).check()
        return _json_records(result.stderr)

    with_cache = ("--cache", "--cache-copy-layers", "--cache-repo", f"oci:{cache}")
    cold = run("cold", "1", *with_cache)
    common_layer = next(r["layer_digest"] for r in cold if r.get("event") == "step_done"
                        and r["instruction"] == "RUN echo common > /common.txt")
    (cache / "blobs" / "sha256" / common_layer.removeprefix("sha256:")).unlink()
    lost = run("lost", "2", *with_cache)
    again = [r for r in lost if "building the stage again" in r.get("msg", "")]
    assert len(again) == 1 and again[0]["stage"] in (2, 3), again
    run("uncached", "2")
    digests = {out: json.loads((tmp_path / out / "index.json").read_text())["manifests"][0]
               ["digest"] for out in ("lost", "uncached")}
    assert digests["lost"] == digests["uncached"]
    rootfs = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{tmp_path / 'lost'}:latest", str(rootfs)],
                   check=True, capture_output=True)
    assert (rootfs / "rootfs" / "out" / "left.txt").read_text() == "common\n2\n"
    assert (rootfs / "rootfs" / "out" / "right.txt").read_text() == "common\n2\n"


def test_records_from_download_threads_name_their_stage(
        tmp_path: Path, registry: Registry, fault_proxy: FaultProxy,
        base_images: BaseImages) -> None:
    """A retry logged by a pull's download thread carries the stage that pulls."""
    upstream = fault_proxy.upstream.split("://", 1)[1]
    via_proxy = base_images.oci.replace(upstream, fault_proxy.host)
    # The layer, not the config: the config is read on the stage's own thread.
    layer = skopeo_manifest(base_images.oci)["layers"][0]["digest"]
    fault_proxy.inject_error("GET", f"/blobs/{layer}", 503, "UNAVAILABLE", "try again")
    context = write_tree(tmp_path / "ctx", {"one": "one\n", "Dockerfile": (
        "FROM scratch AS one\n"
        "COPY one /one\n"
        f"FROM {via_proxy}\n"
        "COPY --from=one /one /one\n")})
    result = build(context, "-d", registry.ref("e2e/jobs:log-stage"),
                   "--log-format", "json").check()
    retries = [r for r in _json_records(result.stderr) if "answered HTTP 503" in r["msg"]]
    assert fault_proxy.count("GET", f"/blobs/{layer}") == 2
    assert [r.get("stage") for r in retries] == [2], retries
