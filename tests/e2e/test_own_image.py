"""kanipy's own image, built by kanipy from the repository's Dockerfile, then used as CI uses it.

The image is built on the local Debian + python3 base (plus pip, installed by
a kanipy build from Debian's python3-pip-whl wheel) from wheels downloaded
once into the test cache, so no step needs more than Debian's mirror and
PyPI. The built image is unpacked with umoci and run with runc, uid 0 and
Docker's default capabilities and seccomp profile, exactly as a Tekton or
GitLab step runs Kaniko's image: ``/kaniko/executor`` with Kaniko's argv
builds an example Dockerfile with RUN steps and pushes it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import build, skopeo_config, skopeo_manifest, unpack_image, write_tree
from tests.fixtures.registry import Registry
from tests.fixtures.runc import Bind, RuncStep, container_name, run_step
from tests.tools import unavailable

REPO = Path(__file__).resolve().parents[2]
PIP_WHEEL = Path("/usr/share/python-wheels/pip-23.0.1-py3-none-any.whl")
# kanipy's runtime dependencies (pyproject.toml) and the build backend.
REQUIREMENTS = ("click>=8.1", "requests>=2.31", "dockerfile-parse>=2.0", "zstandard>=0.22",
                "isal>=1.6,<2", "setuptools>=61")

EXAMPLE = """\
FROM {base}
RUN echo built-by-kanipy-image > /built && test -c /dev/null && nproc > /nproc
RUN --mount=type=cache,target=/var/cache/example \\
    echo cached > /var/cache/example/f && getent hosts localhost > /hosts
"""


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """Wheels of kanipy's dependencies for this Python, downloaded once from PyPI."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kanipy-test"
    wheels = cache / f"wheels-py{sys.version_info.major}{sys.version_info.minor}"
    if not (wheels / ".complete").exists():
        wheels.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "-q",
             "-d", str(wheels), *REQUIREMENTS], capture_output=True, text=True)
        if proc.returncode != 0:
            unavailable(f"cannot download kanipy's dependencies from PyPI: {proc.stderr}")
        (wheels / ".complete").touch()
    return wheels


def _source_context(directory: Path, wheels: Path) -> Path:
    """The repository's files the image needs, and the wheelhouse, as a build context."""
    directory.mkdir(parents=True)
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, directory / name)
    shutil.copytree(REPO / "kanipy", directory / "kanipy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(wheels, directory / "wheels")
    return directory


def test_kanipy_builds_its_own_image_which_builds_in_a_ci_container(
        tmp_path: Path, registry: Registry, debian_python_base: str, wheelhouse: Path) -> None:
    if not PIP_WHEEL.exists():
        unavailable(f"{PIP_WHEEL} (Debian's python3-pip-whl) is not installed")
    # A python base with pip, as python:slim is (made by kanipy, from Debian's wheel).
    wheel = f"/tmp/{PIP_WHEEL.name}"
    pip_context = write_tree(tmp_path / "pip-base", {"Dockerfile": (
        f"FROM {debian_python_base}\n"
        f"COPY {PIP_WHEEL.name} {wheel}\n"
        f"RUN python3 {wheel}/pip install -q --no-index --break-system-packages "
        f"--root-user-action=ignore {wheel} && rm {wheel}\n")})
    shutil.copy2(PIP_WHEEL, pip_context / PIP_WHEEL.name)
    pip_base = registry.ref("own-image/python-pip:1")
    build(pip_context, "-d", pip_base).check()

    image = registry.ref("own-image/kanipy:test")
    context = _source_context(tmp_path / "src", wheelhouse)
    build(context, "-d", image, "--build-arg", f"BASE={pip_base}",
          "--build-arg", "PIP_OPTIONS=--no-index --find-links /tmp/kanipy-src/wheels").check()

    config = skopeo_config(image)["config"]
    assert config["Entrypoint"] == ["kanipy"]
    assert "DOCKER_CONFIG=/kaniko/.docker" in config["Env"]
    layers = skopeo_manifest(image)["layers"]
    own = layers[-1]["size"]  # the layer this Dockerfile adds over its base
    print(f"kanipy's image: {sum(layer['size'] for layer in layers) / 1e6:.1f} MB "
          f"compressed, {own / 1e6:.1f} MB of it kanipy and its dependencies")

    rootfs = unpack_image(image, tmp_path / "unpacked")
    assert not (rootfs / "tmp" / "kanipy-src").exists(), "the bound sources stay out"
    assert os.access(rootfs / "kaniko" / "executor", os.X_OK)

    example = write_tree(tmp_path / "example", {"Dockerfile": EXAMPLE.format(
        base=debian_python_base)})
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    (docker_config / "config.json").write_text(json.dumps({"auths": {}}))
    dest = registry.ref("own-image/example:1")
    # Kaniko's argv, as Tekton's catalog Task and GitLab's docs pass it.
    step = RuncStep(
        args=["/kaniko/executor", "--context", "dir:///workspace/source",
              "--dockerfile", "/workspace/source/Dockerfile", "--destination", dest,
              "--digest-file", "/workspace/source/digest"],
        binds=[Bind(example, "/workspace/source"),
               Bind(docker_config, "/kaniko/.docker", readonly=True)],
        env={"DOCKER_CONFIG": "/kaniko/.docker"}, cwd="/workspace")
    result = run_step(tmp_path / "bundle", rootfs, step, name=container_name("own-image"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RUN steps run unprivileged" in result.stderr
    digest = (example / "digest").read_text().strip()
    assert digest.startswith("sha256:")
    built = unpack_image(dest, tmp_path / "example-image")
    assert (built / "built").read_text() == "built-by-kanipy-image\n"
    assert (built / "hosts").read_text().split()[0] == "127.0.0.1"
    assert not (built / "var/cache/example").exists()
