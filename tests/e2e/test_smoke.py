"""The README's promise in one test: a Dockerfile built, pushed, and read back by skopeo/umoci."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.helpers import build, skopeo_config, unpack_image, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry


def test_build_push_and_read_back(tmp_path: Path, registry: Registry,
                                  base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": (
            f"FROM {base_images.oci}\n"
            "ENV GREETING=hello\n"
            "WORKDIR /app\n"
            "COPY hello.txt .\n"
            "RUN echo \"$GREETING from RUN\" > /app/run.txt && rm /bin/vi\n"
            "CMD [\"cat\", \"/app/hello.txt\"]\n"
        ),
        "hello.txt": "hello from the context\n",
    })
    dest = registry.ref("e2e/smoke:latest")
    result = build(context, "--destination", dest).check()
    assert result.stdout.strip().startswith(f"{registry.host}/e2e/smoke@sha256:")

    config = skopeo_config(dest)
    assert "GREETING=hello" in config["config"]["Env"]
    assert config["config"]["WorkingDir"] == "/app"
    assert config["config"]["Cmd"] == ["cat", "/app/hello.txt"]
    layers = [h for h in config["history"] if not h.get("empty_layer")]
    assert len(layers) == len(config["rootfs"]["diff_ids"]) == 4  # base, WORKDIR, COPY, RUN

    rootfs = unpack_image(dest, tmp_path / "out")
    assert (rootfs / "app/hello.txt").read_text() == "hello from the context\n"
    assert (rootfs / "app/run.txt").read_text() == "hello from RUN\n"
    assert not (rootfs / "bin/vi").exists(), "a file deleted by RUN must be whited out"
    assert (rootfs / "bin/sh").is_symlink()
