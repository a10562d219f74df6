"""The Dockerfiles in examples/ build, and what they build runs (under runc)."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.helpers import REPO, build, run_with_runc, skopeo_config, unpack_image
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry

EXAMPLES = REPO / "examples"


def test_static_site(tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    dest = registry.ref("examples/static-site:latest")
    build(EXAMPLES / "static-site", "--build-arg", f"BASE={base_images.oci}", "-d", dest,
          dockerfile=str(EXAMPLES / "static-site" / "Dockerfile")).check()
    config = skopeo_config(dest)["config"]
    assert config["User"] == "www"
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    rootfs = unpack_image(dest, tmp_path / "out")
    site = EXAMPLES / "static-site" / "site"
    assert (rootfs / "var/www/index.html").read_bytes() == (site / "index.html").read_bytes()
    # .dockerignore keeps only site/: the Dockerfile itself never reaches the image.
    assert (rootfs / "var/www/files.txt").read_text() == (
        "/var/www/css/site.css\n/var/www/index.html\n")
    assert (rootfs / "var/www/index.html").stat().st_uid == 1000
    proc = run_with_runc(rootfs, ["cat", "/var/www/index.html"])
    assert proc.returncode == 0, proc.stderr
    assert "Built by kanipy" in proc.stdout


def test_multi_stage(tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    dest = registry.ref("examples/multi-stage:latest")
    build(EXAMPLES / "multi-stage", "--build-arg", f"BASE={base_images.oci}",
          "--build-arg", "VERSION=2.5.0", "-d", dest).check()
    config = skopeo_config(dest)
    assert config["config"]["Entrypoint"] == ["/usr/local/bin/app"]
    assert config["config"]["Cmd"] == ["world"]
    # Only the final stage's layers: the base, and the one COPY --from=builder.
    assert len(config["rootfs"]["diff_ids"]) == 2
    rootfs = unpack_image(dest, tmp_path / "out")
    assert not (rootfs / "src").exists(), "the builder's sources stay in the builder"
    proc = run_with_runc(rootfs)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello, world (app 2.5.0)\n"


def test_python_app(tmp_path: Path, registry: Registry, debian_python_base: str) -> None:
    dest = registry.ref("examples/python-app:latest")
    build(EXAMPLES / "python-app", "--build-arg", f"BASE={debian_python_base}",
          "-d", dest).check()
    config = skopeo_config(dest)["config"]
    assert config["User"] == "app"
    assert config["WorkingDir"] == "/app"
    assert "PYTHONUNBUFFERED=1" in config["Env"]
    rootfs = unpack_image(dest, tmp_path / "out")
    assert "app:x:10001:" in (rootfs / "etc/passwd").read_text()
    proc = run_with_runc(rootfs, ["python3", "/app/app.py", "--check"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == '{"path": "/health", "status": "ok"}\n'
