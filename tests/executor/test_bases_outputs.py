"""Stage bases (pulled, scratch, COPY --from images) and the build's outputs, one by one."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from kanipy.dockerfile import plan_build
from kanipy.errors import IntegrityError, PlatformNotFoundError
from kanipy.executor.bases import StageBases
from kanipy.executor.outputs import write_digest_files, write_oci_layout, write_tarball
from kanipy.executor.progress import NullReporter
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.descriptor import Platform
from kanipy.oci.image import StoredImage
from kanipy.oci.layout import layout_refs, read_layout
from kanipy.reference import Reference
from kanipy.registry import RegistryClient, RegistryOptions
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry
from tests.oci.conftest import make_image
from tests.tools import require_root


class CountingClient:
    """Makes the registry client on first use and counts how often it was asked for."""

    def __init__(self) -> None:
        self.calls = 0
        self.client: RegistryClient | None = None

    def __call__(self) -> RegistryClient:
        self.calls += 1
        if self.client is None:
            self.client = RegistryClient(RegistryOptions(backoff=0.05))
        return self.client


def _bases(tmp_path: Path, client: CountingClient,
           platform: Platform | None = None) -> StageBases:
    build_dir = tmp_path / "build"
    build_dir.mkdir(exist_ok=True)
    return StageBases(client=client, store=BlobStore(tmp_path / "blobs"), build_dir=build_dir,
                      reporter=NullReporter(), target_platform=platform or Platform(),
                      image_format=None)


def test_image_root_pulls_and_unpacks_once_per_build(
    tmp_path: Path, registry: Registry, base_images: BaseImages,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_root()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    client = CountingClient()
    bases = _bases(tmp_path, client)
    root = bases.image_root(base_images.oci)
    assert (root / "bin" / "busybox").is_file()
    assert bases.image_root(base_images.oci) == root
    assert client.calls == 1  # the second call neither pulled nor unpacked
    assert bases.image_roots == [root]


def test_scratch_needs_no_registry(tmp_path: Path) -> None:
    client = CountingClient()
    plan = plan_build("FROM --platform=linux/arm64 scratch\nCOPY a /a\n")
    base = _bases(tmp_path, client).stage_base(plan.stages[0], {})
    assert base.layers == [] and base.image_format == "oci"
    assert base.config.architecture == "arm64"
    assert base.root.is_dir() and not any(base.root.iterdir())
    assert client.calls == 0


def test_a_base_without_the_platform_is_a_usage_error(
    tmp_path: Path, registry: Registry, base_images: BaseImages,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    plan = plan_build(f"FROM --platform=linux/s390x {base_images.multi}\n")
    with pytest.raises(PlatformNotFoundError) as err:
        _bases(tmp_path, CountingClient()).stage_base(plan.stages[0], {})
    assert err.value.exit_code == 2
    assert "--custom-platform" in err.value.message


@pytest.fixture
def image(tmp_path: Path) -> StoredImage:
    return make_image(BlobStore(tmp_path / "store"), [{"etc/hello": b"hello\n"}])


def test_write_tarball_names_every_destination(tmp_path: Path, image: StoredImage) -> None:
    path = tmp_path / "out" / "image.tar"
    write_tarball(image, path, [Reference.parse("reg.example/app:v1"),
                                Reference.parse("reg.example/app")])
    with tarfile.open(path) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["reg.example/app:v1", "reg.example/app:latest"]


def test_write_tarball_without_destination_uses_kanikos_name(
    tmp_path: Path, image: StoredImage
) -> None:
    path = tmp_path / "image.tar"
    write_tarball(image, path, [])
    with tarfile.open(path) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["docker.io/unset-repo/unset-image-name:latest"]


def test_write_oci_layout_tags_with_the_destinations_tags(
    tmp_path: Path, image: StoredImage
) -> None:
    layout = tmp_path / "layout"
    write_oci_layout(image, layout, [Reference.parse("reg.example/app:v1"),
                                     Reference.parse("reg.example/app")])
    assert layout_refs(layout) == ["v1", "latest"]  # a reference without a tag means latest
    assert read_layout(layout, "v1").digest == image.digest
    write_oci_layout(image, tmp_path / "untagged", [])
    assert layout_refs(tmp_path / "untagged") == ["latest"]


def test_write_digest_files_in_kanikos_formats(tmp_path: Path, image: StoredImage) -> None:
    refs = [Reference.parse("reg.example:5000/app:v1"), Reference.parse("busybox")]
    write_digest_files(image, refs, digest_file=tmp_path / "d" / "digest",
                       image_name_with_digest_file=tmp_path / "names",
                       image_name_tag_with_digest_file=tmp_path / "tags")
    digest = str(image.digest)
    assert (tmp_path / "d" / "digest").read_text() == digest
    assert (tmp_path / "names").read_text() == (
        f"reg.example:5000/app@{digest}\nindex.docker.io/library/busybox@{digest}\n")
    assert (tmp_path / "tags").read_text() == (
        f"reg.example:5000/app:v1@{digest}\n"
        f"index.docker.io/library/busybox:latest@{digest}\n")


def test_an_invalid_built_image_is_written_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """validate_image runs on the built image before the first output."""
    from kanipy.executor import engine
    from kanipy.executor.options import BuildOptions

    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    (context / "a").write_text("a\n")
    real_store_image = engine.store_image

    def store_then_corrupt(store: BlobStore, *args: object, **kwargs: object) -> StoredImage:
        image = real_store_image(store, *args, **kwargs)  # type: ignore[arg-type]
        store.path(image.manifest().layers[0].digest).write_bytes(b"not the layer")
        return image

    monkeypatch.setattr(engine, "store_image", store_then_corrupt)
    options = BuildOptions(context=str(context), dockerfile=str(context / "Dockerfile"),
                           no_push=True, tar_path=tmp_path / "image.tar",
                           digest_file=tmp_path / "digest", kanipy_dir=tmp_path / "work")
    with pytest.raises(IntegrityError, match="layer 0: blob digest"):
        engine.run_build(options, NullReporter())
    assert not (tmp_path / "image.tar").exists()
    assert not (tmp_path / "digest").exists()


def test_work_dirs_are_removed_even_when_a_signal_cuts_the_removal_short(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first SIGTERM raises wherever the main thread is, the removal included: it is
    done again before the interrupt goes on, so nothing is left behind (issue 11)."""
    from kanipy.executor import engine

    work = tmp_path / "work"
    (work / "build" / "sub").mkdir(parents=True)
    (work / ".kanipy-build.lock").write_text("1\n")
    real_remove = engine.remove_tree
    calls: list[Path] = []

    def interrupted_once(path: Path, last: str | None = None) -> bool:
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real_remove(path, last=last)

    monkeypatch.setattr(engine, "remove_tree", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        engine._remove_work_dir(work)
    assert calls == [work, work]
    assert not work.exists()
