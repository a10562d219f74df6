"""What a finished build writes: one function per kind of output, each taking the image.

The build calls them in this order, after ``validate_image`` passed:
``push_to_registries`` (every ``--destination``, manifest last),
then ``write_builder_output`` (``$BUILDER_OUTPUT/images``, after a push only),
``write_tarball`` (``--tar-path``, docker load format), ``write_oci_layout``
(``--oci-layout-path``) and ``write_digest_files`` (Kaniko's digest files).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from kanipy.errors import RegistryError
from kanipy.executor.progress import BuildReporter
from kanipy.oci.blobstore import write_file_atomically
from kanipy.oci.digest import Digest
from kanipy.oci.image import Image
from kanipy.reference import DOCKER_HUB, Reference
from kanipy.registry import RegistryClient
from kanipy.registry.push import is_immutable_tag_refusal, push

log = logging.getLogger(__name__)

# Kaniko's name for the image of a --no-push build without --destination.
UNSET_DESTINATION = "docker.io/unset-repo/unset-image-name:latest"


def push_to_registries(
    image: Image,
    destinations: Sequence[Reference],
    *,
    client: RegistryClient,
    layer_sources: Mapping[str, tuple[str, str]],
    reporter: BuildReporter,
    ignore_immutable_tag_errors: bool = False,
    pushed: list[str] | None = None,
) -> list[str]:
    """Push ``image`` to each destination in turn; the ``name@digest`` of each push.

    ``layer_sources`` maps a layer digest to the (registry, repository) it was
    pulled from: a destination on that registry mounts the layer from there.
    With ``ignore_immutable_tag_errors`` (Kaniko's
    --push-ignore-immutable-tag-errors), a destination whose registry refuses
    the manifest because the tag is immutable is passed over with a warning;
    it gets no ``name@digest`` line, as the tag names another image.
    Each ``name@digest`` is appended to ``pushed`` as soon as that push is done,
    so a caller knows which tags moved when a later destination fails.
    """
    manifest = image.manifest()
    pushed_names = pushed if pushed is not None else []
    for ref in destinations:
        mounts: dict[Digest, str] = {}
        for desc in manifest.layers:
            source = layer_sources.get(str(desc.digest))
            if source and source[0] == ref.registry and source[1] != ref.repository:
                mounts[desc.digest] = source[1]
        try:
            digest = push(image, ref, client=client, mount_sources=mounts,
                          on_progress=reporter.transfer)
        except RegistryError as exc:
            if not (ignore_immutable_tag_errors and is_immutable_tag_refusal(exc)):
                raise
            log.warning("%s: the tag is immutable and the registry kept its image; "
                        "%s@%s was not tagged (--push-ignore-immutable-tag-errors): %s",
                        ref, ref.name, manifest.digest, exc.message)
            continue
        reporter.pushed(str(ref), str(digest))
        pushed_names.append(f"{ref.name}@{digest}")
    return pushed_names


def write_builder_output(image: Image, destinations: Sequence[str], directory: Path) -> None:
    """``$BUILDER_OUTPUT/images``: one JSON line ``{"name", "digest"}`` per destination.

    Kaniko's pkg/executor/push.go writes it after every push succeeded (Cloud
    Build reads it): each name as the destination was given, the image's digest,
    one compact JSON object per line as Go's json.Encoder writes them.
    """
    digest = str(image.manifest().digest)
    _write_text(directory / "images", "".join(
        json.dumps({"name": name, "digest": digest}, separators=(",", ":")) + "\n"
        for name in destinations))


def write_tarball(image: Image, path: Path, destinations: Sequence[Reference]) -> None:
    """``--tar-path``: a ``docker load`` archive tagged with every destination."""
    from kanipy.oci.dockerarchive import write_docker_archive  # only for --tar-path

    # Kaniko names an image built with --no-push and no destination this way,
    # so its --tar-path archive still loads under a name.
    named = list(destinations) or [Reference.parse(UNSET_DESTINATION)]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_docker_archive(path, image, [f"{r.name}:{r.tag or 'latest'}" for r in named])


def write_oci_layout(image: Image, path: Path, destinations: Sequence[Reference]) -> None:
    """``--oci-layout-path``: the image in an OCI layout, tagged with the destinations' tags."""
    # The image goes in as built, Docker media types included (Kaniko's
    # layout.AppendImage does the same), so the layout, the registry and
    # the digest file agree on one digest. skopeo and umoci read only OCI
    # manifests from a layout: --image-format oci gives them one.
    from kanipy.oci.layout import write_layout  # only for --oci-layout-path

    tags = [r.tag for r in destinations if r.tag] or ["latest"]
    # A layout is complete with its index.json or not there at all (issue 11):
    # index.json is written last, atomically, so a layout that was there keeps
    # its old index when this fails; one started here is emptied again.
    fresh = not path.exists() or not any(path.iterdir())
    try:
        write_layout(path, image, tags, oci_media_types=False)
    except BaseException:
        if fresh and path.is_dir():
            for child in list(path.iterdir()):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise


def image_size(image: Image) -> int:
    """The bytes of ``image``'s blobs: manifest, config and (compressed) layers."""
    manifest = image.manifest()
    return len(manifest.raw) + manifest.config.size + sum(d.size for d in manifest.layers)


def write_digest_files(
    image: Image,
    destinations: Sequence[Reference],
    *,
    digest_file: Path | None = None,
    image_name_with_digest_file: Path | None = None,
    image_name_tag_with_digest_file: Path | None = None,
) -> None:
    """Kaniko's digest files, those that were asked for.

    The formats of Kaniko's pkg/executor/push.go, which Tekton Tasks turn into
    results: the digest alone with no newline; one line per destination,
    NAME@DIGEST or NAME:TAG@DIGEST (a destination without a tag is :latest).
    """
    digest = image.manifest().digest
    if digest_file:
        _write_text(digest_file, str(digest))
    if image_name_with_digest_file:
        _write_text(image_name_with_digest_file,
                    "".join(f"{_kaniko_name(r)}@{digest}\n" for r in destinations))
    if image_name_tag_with_digest_file:
        _write_text(image_name_tag_with_digest_file,
                    "".join(f"{_kaniko_name(r)}:{r.tag or 'latest'}@{digest}\n"
                            for r in destinations))


def _kaniko_name(ref: Reference) -> str:
    """``registry/repository`` as Kaniko writes it: Docker Hub as ``index.docker.io``.

    Kaniko prints go-containerregistry's ``Repository.Name()``, which spells
    Docker Hub ``index.docker.io``; scripts that compare against it expect that.
    """
    if ref.registry == DOCKER_HUB:
        return f"index.docker.io/{ref.repository}"
    return ref.name


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomically(path, text.encode())
