"""Docker/BuildKit behaviours of issue 12, end to end on the real registry, the result
read back with skopeo and umoci.

Each test is written from the documented behaviour: Docker's "Build variables" page
(ARG inheritance between stages), BuildKit's COPY with a wildcard that matches nothing,
the supplementary groups a RUN gets under USER, and the owner of a WORKDIR made under a
numeric USER.
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.helpers import build, skopeo_config, unpack_image, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry


def test_a_child_stage_inherits_the_args_of_its_parent_stage(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    dockerfile = (
        f"FROM {base_images.oci} AS parent\n"
        "ARG VERSION=1.2\n"
        "ARG FROMBUILD\n"
        "FROM parent AS child\n"
        'RUN echo "inherited=$VERSION build=$FROMBUILD" > /child-run\n'
        "ARG VERSION\n"
        'RUN echo "bare=$VERSION" > /child-bare\n'
        'ARG VERSION="$VERSION-dev"\n'
        'RUN echo "extended=$VERSION" > /child-extended\n'
        "LABEL version=$VERSION\n"
        "FROM child\n"
        "LABEL grandchild=$VERSION\n"
    )
    context = write_tree(tmp_path / "ctx", {"Dockerfile": dockerfile})
    dest = registry.ref("e2e/docker4-args:latest")
    build(context, "-d", dest, "--build-arg", "FROMBUILD=b").check()
    rootfs = unpack_image(dest, tmp_path / "out")
    assert (rootfs / "child-run").read_text() == "inherited=1.2 build=b\n"
    assert (rootfs / "child-bare").read_text() == "bare=1.2\n"
    assert (rootfs / "child-extended").read_text() == "extended=1.2-dev\n"
    config = skopeo_config(dest)["config"]
    assert config["Labels"]["version"] == "1.2-dev"
    assert config["Labels"]["grandchild"] == "1.2-dev", "inherited through two stages"
    assert not any(e.startswith(("VERSION=", "FROMBUILD=")) for e in config.get("Env", [])), \
        "ARG values never reach the image's Env"
    dry = build(context, "--dry-run", "--no-push", "--build-arg", "FROMBUILD=b").check()
    assert 'LABEL version="1.2-dev"' in dry.stdout + dry.stderr, "planning agrees"


def test_a_wildcard_that_matches_nothing_copies_nothing(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {
        "app.txt": "app\n",
        "Dockerfile": (
            f"FROM {base_images.oci} AS src\n"
            f"FROM {base_images.oci}\n"
            # One source matches, one wildcard matches nothing: the match is copied.
            "COPY app.txt optional*.env /mixed/\n"
            # Only wildcards that match nothing: no error, and BuildKit's file operation
            # returns before copying, so not even the destination is made.
            "COPY nothing*.txt missing?/ /empty/\n"
            "COPY --from=src /nope/*.so /libs/\n"
        ),
    })
    dest = registry.ref("e2e/docker4-wildcard:latest")
    build(context, "-d", dest).check()
    rootfs = unpack_image(dest, tmp_path / "out")
    assert sorted(p.name for p in (rootfs / "mixed").iterdir()) == ["app.txt"]
    assert not (rootfs / "empty").exists()
    assert not (rootfs / "libs").exists()
    # A source named without a wildcard must still exist.
    (context / "Dockerfile").write_text(f"FROM {base_images.oci}\nCOPY app.txt gone.txt /d/\n")
    failed = build(context, "--no-push")
    assert failed.returncode == 1, failed.stderr
    assert "'gone.txt' not found in the build context" in failed.stderr
