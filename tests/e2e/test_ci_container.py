"""The acceptance matrix of issue 9: real RUN workloads, built with full rights and in CI.

One Dockerfile of what CI users run (apt-get, pip, useradd, /proc, /dev,
name resolution, every ``RUN --mount`` type) is built twice: by kanipy on the
host as root with full rights (the isolated mode), and by kanipy inside a
runc container with Docker's default capabilities and seccomp profile, as a
Tekton or GitLab step runs Kaniko (the unprivileged mode). Both builds must
pass and give the same files, read back with skopeo and umoci.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from kanipy.executor.workdirs import abandoned
from tests.e2e.build_support import tag_exists
from tests.e2e.ci_container import CIContainer
from tests.e2e.helpers import (
    build,
    cached_steps,
    lstat_info,
    skopeo_manifest,
    unpack_image,
    write_tree,
)
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry
from tests.fixtures.runc import Bind
from tests.tools import unavailable

PIP_WHEEL = Path("/usr/share/python-wheels/pip-23.0.1-py3-none-any.whl")
SECRET = "ci-secret-4f2a"
# A package without dependencies beyond Debian's minbase, from the mirror apt uses.
APT_PACKAGE = "tree"


def _hello_wheel(directory: Path) -> Path:
    """A pure-Python wheel (PEP 427) made by hand: module ``hello`` and its dist-info."""
    path = directory / "hello-1.0-py3-none-any.whl"
    files = {
        "hello.py": "GREETING = 'hello from a wheel'\n",
        "hello-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: hello\nVersion: 1.0\n",
        "hello-1.0.dist-info/WHEEL": ("Wheel-Version: 1.0\nGenerator: kanipy-tests\n"
                                      "Root-Is-Purelib: true\nTag: py3-none-any\n"),
    }
    record = [f"{name},sha256={_urlsafe_digest(text.encode())},{len(text.encode())}"
              for name, text in files.items()]
    record.append("hello-1.0.dist-info/RECORD,,")
    files["hello-1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path


def _urlsafe_digest(data: bytes) -> str:
    import base64
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


WORKLOADS = """\
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends {apt} > /dev/null \\
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \\
    && tree --version | cut -c1-9 > /out/apt
COPY pip.whl hello-1.0-py3-none-any.whl /tmp/wheels/
RUN python3 /tmp/wheels/pip.whl/pip install -q --no-index --no-cache-dir \\
    --root-user-action=ignore --break-system-packages /tmp/wheels/hello-1.0-py3-none-any.whl \\
    && rm -rf /tmp/wheels \\
    && python3 -c 'import hello; print(hello.GREETING)' > /out/pip
RUN useradd --create-home --uid 1234 builder && id builder > /out/useradd
RUN bash -c 'while read -r line; do echo "$line"; done < <(echo substituted)' \
    > /out/process-substitution
RUN grep -c '^Uid:' /proc/self/status > /out/proc-status
RUN nproc > /out/nproc
RUN getent hosts localhost | head -1 | cut -d' ' -f1 > /out/getent
RUN echo discarded > /dev/null && echo ok > /out/dev-null
RUN head -c 32 /dev/urandom | wc -c > /out/urandom
RUN --mount=type=cache,target=/var/cache/ci,id=ci-cache \\
    echo run > /var/cache/ci/marker && ls /var/cache/ci > /out/cache
RUN --mount=type=secret,id=token \\
    stat -c '%a' /run/secrets/token > /out/secret-mode && wc -c < /run/secrets/token > /out/secret
RUN --mount=type=bind,source=data,target=/mnt/data \\
    cat /mnt/data/input.txt > /out/bind
RUN --mount=type=tmpfs,target=/scratch \\
    touch /scratch/x && ls -A /scratch > /out/tmpfs
"""


def _context(directory: Path, base: str) -> Path:
    context = write_tree(directory, {
        "Dockerfile": f"FROM {base}\nRUN mkdir /out\n" + WORKLOADS.format(apt=APT_PACKAGE),
        "data/input.txt": "bound from the context\n",
    })
    if not PIP_WHEEL.exists():
        unavailable(f"{PIP_WHEEL} (Debian's python3-pip-whl) is not installed")
    shutil.copy2(PIP_WHEEL, context / "pip.whl")
    _hello_wheel(context)
    return context


EXPECTED = {
    "apt": "tree v2.1",
    "pip": "hello from a wheel",
    "useradd": "uid=1234(builder) gid=1234(builder) groups=1234(builder)",
    "process-substitution": "substituted",
    "proc-status": "1",
    "nproc": str(len(os.sched_getaffinity(0))),
    "getent": "127.0.0.1",
    "dev-null": "ok",
    "urandom": "32",
    "cache": "marker",
    "secret-mode": "400",
    "secret": str(len(SECRET)),
    "bind": "bound from the context",
    "tmpfs": "x",
}
# What the unprivileged mode cannot give yet, and what the step sees instead
# (docs/architecture.md, "`/proc` without mount rights").
UNPRIVILEGED_GAPS: dict[str, str] = {}


def _tree(rootfs: Path) -> dict[str, tuple[object, ...]]:
    """Every path of an unpacked image with its mode, owner and (for files) content digest."""
    entries: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = "/" + path.relative_to(rootfs).as_posix()
            info: tuple[object, ...] = lstat_info(path)
            if path.is_file() and not path.is_symlink():
                info += (hashlib.sha256(path.read_bytes()).hexdigest(),)
            entries[rel] = info
    return entries


# Files whose content legitimately differs between two builds on one day
# (apt's and debconf's caches, useradd's and dpkg's logs, and byte code, which
# holds its source's mtime), compared by presence, mode and owner only.
VOLATILE = ("/var/cache/debconf/", "/var/lib/dpkg/status-old", "/var/log/",
            "/var/cache/ldconfig/", "/etc/shadow", "/etc/gshadow")


def _volatile(path: str) -> bool:
    return path.startswith(VOLATILE) or "/__pycache__/" in path


@pytest.fixture(scope="module")
def ci_secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secret") / "token"
    path.write_text(SECRET)
    return path


def test_workloads_give_the_same_image_with_full_rights_and_in_a_ci_container(
        tmp_path: Path, registry: Registry, debian_python_base: str,
        ci_container: CIContainer, ci_secret: Path) -> None:
    context = _context(tmp_path / "ctx", debian_python_base)
    host_ref = registry.ref("ci/matrix:host")
    ci_ref = registry.ref("ci/matrix:runc")

    host = build(context, "-d", host_ref, "--secret", f"id=token,src={ci_secret}")
    assert host.returncode == 0, host.stderr[-3000:]
    assert "RUN steps run isolated" in host.stderr

    ci = ci_container.build(
        context, "-d", ci_ref, "--secret", "id=token,src=/kaniko/secret/token", name="matrix",
        extra_binds=[Bind(ci_secret.parent, "/kaniko/secret", readonly=True)])
    assert ci.returncode == 0, ci.stderr[-3000:]
    assert "RUN steps run unprivileged" in ci.stderr
    assert "WARNING" not in ci.stderr, ci.stderr

    host_root = unpack_image(host_ref, tmp_path / "host")
    ci_root = unpack_image(ci_ref, tmp_path / "ci")
    for name, expected in EXPECTED.items():
        assert (host_root / "out" / name).read_text().strip() == expected, name
        ci_expected = UNPRIVILEGED_GAPS.get(name, expected)
        assert (ci_root / "out" / name).read_text().strip() == ci_expected, name
    host_tree = _tree(host_root)
    ci_tree = _tree(ci_root)
    for name in UNPRIVILEGED_GAPS:
        host_tree.pop(f"/out/{name}")
        ci_tree.pop(f"/out/{name}")
    assert sorted(host_tree) == sorted(ci_tree)
    differing = [path for path in host_tree if host_tree[path] != ci_tree[path]
                 and not (_volatile(path) and host_tree[path][:3] == ci_tree[path][:3])]
    assert differing == []
    # Nothing the steps were given is in the image.
    for root in (host_root, ci_root):
        assert not (root / "run/secrets/token").exists()
        assert not (root / "var/cache/ci").exists()
        assert not (root / "mnt/data").exists() and not (root / "scratch").exists()
        assert sorted(p.name for p in (root / "proc").iterdir()) == []
        assert sorted(p.name for p in (root / "dev").iterdir()) == []


def test_the_layer_cache_is_shared_by_the_host_and_ci_containers(
        tmp_path: Path, registry: Registry, base_images: BaseImages,
        ci_container: CIContainer) -> None:
    """Kaniko's users share --cache-repo between runners: entries a host build wrote
    are hit by a CI step (no mount rights), and a step that misses there runs
    unprivileged on a root filled from the cached layers."""
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": (f"FROM {base_images.oci}\n"
                       "RUN echo early > /early\n"
                       "COPY late.txt /late.txt\n"
                       "RUN cat /early /late.txt > /both\n"),
        "late.txt": "one\n",
    })
    args = ("--cache", "--cache-copy-layers", "--log-format", "json",
            "--cache-repo", registry.ref("ci/shared-cache/cache"))

    def layers(ref: str) -> list[str]:
        return [layer["digest"] for layer in skopeo_manifest(ref)["layers"]]

    host_ref = registry.ref("ci/shared-cache:host")
    host = build(context, "-d", host_ref, *args).check()
    assert not any(cached_steps(host.stderr).values()), cached_steps(host.stderr)

    warm_ref = registry.ref("ci/shared-cache:warm")
    warm = ci_container.build(context, "-d", warm_ref, *args, name="cache-warm")
    assert warm.returncode == 0, warm.stderr[-3000:]
    assert all(cached_steps(warm.stderr).values()), cached_steps(warm.stderr)
    assert layers(warm_ref) == layers(host_ref)

    (context / "late.txt").write_text("two\n")
    edited_ref = registry.ref("ci/shared-cache:edited")
    edited = ci_container.build(context, "-d", edited_ref, *args, name="cache-edited")
    assert edited.returncode == 0, edited.stderr[-3000:]
    assert list(cached_steps(edited.stderr).values()) == [True, False, False], \
        cached_steps(edited.stderr)
    assert "RUN steps run unprivileged" in edited.stderr
    assert layers(edited_ref)[:-2] == layers(host_ref)[:-2]
    assert (unpack_image(edited_ref, tmp_path / "out") / "both").read_text() == "early\ntwo\n"


def test_a_non_root_ci_step_is_told_what_it_needs(tmp_path: Path, registry: Registry,
                                                  debian_python_base: str,
                                                  ci_container: CIContainer) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": f"FROM {debian_python_base}\n"
                                                          "RUN true\n"})
    context.chmod(0o755)
    result = ci_container.build(context, "-d", registry.ref("ci/non-root:1"), name="nonroot",
                                uid=1000, env={"HOME": "/tmp"})
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "must run as root (uid 0), not uid 1000" in message
    assert "runAsUser: 0" in message and "CAP_SYS_ADMIN is needed" in message
    assert "Traceback" not in result.stderr


def test_a_run_mount_that_cannot_be_provided_names_its_line(
        tmp_path: Path, registry: Registry, debian_python_base: str,
        ci_container: CIContainer) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {debian_python_base}\nRUN true\n"
        "RUN --mount=type=tmpfs,target=/etc/passwd/x true\n")})
    result = ci_container.build(context, "-d", registry.ref("ci/bad-mount:1"), name="badmount")
    assert result.returncode == 1, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("kanipy: error: Dockerfile:3: "), message
    assert "tmpfs at /etc/passwd/x" in message and "not a directory" in message, message


def test_stages_built_at_once_in_a_ci_container_give_the_host_image(
        tmp_path: Path, registry: Registry, base_images: BaseImages,
        ci_container: CIContainer) -> None:
    """Issue 14 in the setting kanipy exists for: two independent builder stages run at
    once in a CI step (unprivileged RUN, no mount rights) and its layers go up while
    later steps run; the image equals a host build made one stage at a time."""
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci} AS one\n"
        "RUN echo one > /one.txt && id -u >> /one.txt\n"
        f"FROM {base_images.oci} AS two\n"
        "RUN echo two > /two.txt && cat /proc/self/status > /dev/null\n"
        f"FROM {base_images.oci}\n"
        "COPY --from=one /one.txt /one.txt\n"
        "RUN cat /one.txt > /seen\n"
        "COPY --from=two /two.txt /two.txt\n")})
    host_ref = registry.ref("ci/stages:host")
    build(context, "-d", host_ref, "--reproducible", "--jobs", "1").check()

    ci_ref = registry.ref("ci/stages:runc")
    ci = ci_container.build(context, "-d", ci_ref, "--reproducible", "--jobs", "2",
                            name="stages")
    assert ci.returncode == 0, ci.stderr[-3000:]
    assert "RUN steps run unprivileged" in ci.stderr
    # The registry's own record of what was pushed, not kanipy's digest.
    assert skopeo_manifest(ci_ref) == skopeo_manifest(host_ref)
    root = unpack_image(ci_ref, tmp_path / "ci")
    assert (root / "seen").read_text() == "one\n0\n"
    assert (root / "two.txt").read_text() == "two\n"


def test_a_failing_stage_in_a_ci_container_stops_the_build_and_pushes_nothing(
        tmp_path: Path, registry: Registry, base_images: BaseImages,
        ci_container: CIContainer) -> None:
    """One stage fails while another runs a long step, unprivileged: the failure is what
    the step reports (its line, its exit status), the other stage's step is ended
    rather than waited for, and no manifest reaches the destination."""
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci} AS slow\n"
        "RUN sleep 120 && echo slow-stage-$((40 + 2))\n"
        f"FROM {base_images.oci} AS broken\n"
        "RUN sleep 1 && exit 7\n"
        f"FROM {base_images.oci}\n"
        "COPY --from=slow /etc/passwd /a\n"
        "COPY --from=broken /etc/passwd /b\n")})
    ref = registry.ref("ci/stages-failed:1")
    ci = ci_container.build(context, "-d", ref, "--jobs", "2", name="stages-failed")
    assert ci.returncode == 1, ci.stderr[-3000:]
    assert "Dockerfile:4" in ci.stderr and "exit code 7" in ci.stderr, ci.stderr[-3000:]
    # Ended, not waited for: a step left to run would have printed this.
    assert "slow-stage-42" not in ci.stderr
    assert "stopped (another stage failed)" in ci.stderr, ci.stderr[-3000:]
    assert not tag_exists(ref)


def test_the_remover_ends_with_the_ci_step_and_a_later_build_sweeps_what_it_left(
        tmp_path: Path, base_images: BaseImages, ci_container: CIContainer) -> None:
    """kanipy is the container's init: when it exits after a success the kernel kills its
    detached remover (issue 14). The step still succeeds and ends; what the remover left
    is recognisably a dead build's, and a later build in the same root removes it."""
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        "RUN mkdir /many && cd /many && for i in $(seq 1 50); do mkdir $i && "
        "(cd $i && seq 1 100 | xargs touch); done\n")})
    tmp = ci_container.rootfs / "tmp"
    ci = ci_container.build(context, "--no-push", name="remover-killed")
    assert ci.returncode == 0, ci.stderr[-3000:]
    left = sorted(p for p in tmp.iterdir() if p.name.startswith("kanipy-"))
    assert abandoned(tmp, "kanipy-") == left, "every leftover is a dead build's, lock and pid"
    # --cleanup waits for the sweep and its own removal: nothing of either is left.
    ci = ci_container.build(context, "--no-push", "--cleanup", name="remover-swept")
    assert ci.returncode == 0, ci.stderr[-3000:]
    assert [p.name for p in tmp.iterdir() if p.name.startswith("kanipy-")] == []
