"""End-to-end helpers: run ``kanipy build`` for real and read the result with other tools.

Builds run kanipy as a subprocess (``python -m kanipy``), exactly as a CI step
would, and the images are read back with skopeo and umoci, never with kanipy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.tools import require_root, require_tool

REPO = Path(__file__).resolve().parents[2]


@dataclass
class BuildRun:
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> BuildRun:
        assert self.returncode == 0, f"kanipy failed ({self.returncode}):\n{self.stderr}"
        return self


def kanipy(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
           timeout: float = 300, stdin: bytes | None = None) -> BuildRun:
    """Run ``kanipy ARGS`` in a child process; never raises on a non-zero exit."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "kanipy", *args], capture_output=True, env=full_env,
        cwd=cwd, timeout=timeout, input=stdin,
    )
    return BuildRun(proc.returncode, proc.stdout.decode(errors="replace"),
                    proc.stderr.decode(errors="replace"))


def build(context: Path, *args: str, dockerfile: str | None = None,
          env: dict[str, str] | None = None) -> BuildRun:
    """``kanipy build -c CONTEXT [-f DOCKERFILE] ARGS`` as root, checked tools present."""
    require_root()
    cmd = ["build", "--context", str(context)]
    if dockerfile is not None:
        cmd += ["--dockerfile", dockerfile]
    return kanipy(*cmd, *args, env=env)


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    """Create files (parents included) under ``root``; returns ``root``."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def run_tool(argv: list[str]) -> str:
    """Run an independent tool; a failure shows its stderr in the test report."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}"
    return proc.stdout


def skopeo_config(ref: str) -> dict:
    """The image config as ``skopeo inspect --config`` reads it from the registry."""
    require_tool("skopeo")
    return json.loads(run_tool(
        ["skopeo", "inspect", "--tls-verify=false", "--config", f"docker://{ref}"]))


def skopeo_manifest(ref: str) -> dict:
    require_tool("skopeo")
    return json.loads(run_tool(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"]))


def unpack_image(ref: str, workdir: Path) -> Path:
    """Copy ``ref`` into an OCI layout with skopeo and unpack it with umoci; the rootfs."""
    require_tool("skopeo")
    require_tool("umoci")
    workdir.mkdir(parents=True, exist_ok=True)
    layout = workdir / "layout"
    bundle = workdir / "bundle"
    run_tool(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
              f"oci:{layout}:image"])
    run_tool(["umoci", "unpack", "--image", f"{layout}:image", str(bundle)])
    return bundle / "rootfs"


def lstat_info(path: Path) -> tuple[str, int, int]:
    """``(octal mode, uid, gid)`` of ``path`` without following a final symlink."""
    st = os.lstat(path)
    return (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid)


def run_with_runc(rootfs: Path, args: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the bundle ``umoci unpack`` made (``rootfs``'s parent) with runc; its result.

    ``args`` replaces the process arguments the image config gave; no terminal.
    """
    require_tool("runc")
    bundle = rootfs.parent
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    if args is not None:
        spec["process"]["args"] = args
    (bundle / "config.json").write_text(json.dumps(spec))
    name = f"kanipy-test-{os.getpid()}-{bundle.parent.name}"
    try:
        return subprocess.run(["runc", "run", "--bundle", str(bundle), name],
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    finally:
        subprocess.run(["runc", "delete", "--force", name], capture_output=True)


def finish_copy_context(root: Path, mtime: int) -> Path:
    """The entries COPY tests need that files alone cannot give, then one mtime for all.

    ``links/rel`` (inside the context) and ``links/abs`` (leaving it), ``hard/two``
    hardlinked to ``hard/one``, modes on ``exec.sh``, ``hello.txt`` and ``dir/sub``,
    a socket ``dir/app.sock`` (never copied), and ``mtime`` on every entry.
    """
    import socket

    links = root / "links"
    links.mkdir(exist_ok=True)
    (links / "rel").unlink(missing_ok=True)
    (links / "rel").symlink_to("../hello.txt")
    (links / "abs").symlink_to("/etc/passwd")
    os.link(root / "hard/one", root / "hard/two")
    (root / "exec.sh").chmod(0o755)
    (root / "hello.txt").chmod(0o640)
    (root / "dir/sub").chmod(0o750)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "dir/app.sock"))
    sock.close()
    for path in root.rglob("*"):
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    return root


def step_records(stderr: str) -> dict[str, dict]:
    """A ``--log-format json`` build log's finished steps by instruction text, and its
    layer-cache miss lines (under ``"misses"``: step label to reason)."""
    out: dict[str, dict] = {}
    for line in stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "step_done":
            out[record["instruction"]] = record
        elif "cache miss" in record.get("msg", ""):
            out.setdefault("misses", {})[record["msg"].split(": cache miss")[0]] = \
                record.get("reason")
    return out


def cached_steps(stderr: str) -> dict[str, bool]:
    """Whether each step that makes a layer came from the cache, by its first 26 characters."""
    return {text[:26]: r["cached"] for text, r in step_records(stderr).items()
            if text.startswith(("RUN", "COPY", "WORKDIR"))}
