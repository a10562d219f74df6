"""``docker load`` tarballs: write an image as ``docker save`` does.

The archive holds ``manifest.json`` (a list of ``{Config, RepoTags, Layers}``,
the format docker load, podman load and skopeo's ``docker-archive:`` read
first), the legacy ``repositories`` map, the config as ``<hex>.json`` and each
layer as ``<diff_id hex>/layer.tar``. Layers are written uncompressed, as
``docker save`` writes them, because every loader accepts that, including
old Docker releases that cannot read zstd; ``compressed_layers=True`` instead
stores the blobs as they are (``<hex>.tar.gz``), as go-containerregistry's
tarball package does, for a smaller file.

Nothing is held in memory: each layer streams from its blob, through the
decompressor, into the tar file, and its diff_id is checked on the way. The
tar header is written with a placeholder size and patched afterwards, so the
uncompressed size need not be known up front. The archive appears at its path
only once complete.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from kanipy.errors import IntegrityError, UsageError
from kanipy.oci import mediatypes as mt
from kanipy.oci.digest import Digest
from kanipy.oci.image import Image

log = logging.getLogger(__name__)

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_CHUNK = 1 << 20


def docker_repo_tag(tag: str) -> tuple[str, str]:
    """Split ``name[:tag]`` into (name, tag) as docker load needs them; ``latest`` by default."""
    if "@" in tag:
        raise UsageError(
            f"{tag!r}: a docker archive names images by tag, not by digest; "
            "give NAME:TAG"
        )
    name, sep, tail = tag.rpartition(":")
    if not sep or "/" in tail:
        return tag, "latest"
    if not name or not tail:
        raise UsageError(f"{tag!r} is not a valid NAME:TAG")
    return name, tail


def _header(name: str, size: int, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    # Fixed owner and times: the same image gives the same archive bytes.
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    # GNU format stores sizes beyond 8 GiB in base-256 within the same 512
    # bytes, so a header patched after the data never changes length.
    buf = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    if len(buf) != _BLOCK:
        raise ValueError(f"tar member name too long for a one-block header: {name}")
    return buf


def _pad(out: BinaryIO, size: int) -> None:
    rest = size % _BLOCK
    if rest:
        out.write(b"\0" * (_BLOCK - rest))


def _add_bytes(out: BinaryIO, name: str, data: bytes) -> None:
    out.write(_header(name, len(data)))
    out.write(data)
    _pad(out, len(data))


def _add_stream(out: BinaryIO, name: str, stream: BinaryIO, expected: Digest, what: str) -> int:
    """Append ``stream`` as member ``name``, checking its digest; returns its size."""
    start = out.tell()
    out.write(_header(name, 0))
    hasher = expected.new_hasher()
    size = 0
    with stream:
        while chunk := stream.read(_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
            out.write(chunk)
    got = Digest(expected.algorithm, hasher.hexdigest())
    if got != expected:
        raise IntegrityError(f"{what}: digest mismatch, expected {expected}, got {got}")
    _pad(out, size)
    end = out.tell()
    out.seek(start)
    out.write(_header(name, size))
    out.seek(end)
    return size


def _compressed_name(digest: Digest, media_type: str) -> str:
    suffix = {"gzip": ".tar.gz", "zstd": ".tar.zst"}.get(mt.layer_compression(media_type), ".tar")
    return digest.hex + suffix


def write_docker_archive(
    path: str | os.PathLike[str],
    image: Image,
    tags: Sequence[str] = (),
    *,
    compressed_layers: bool = False,
) -> Path:
    """Write ``image`` to ``path`` as a tarball ``docker load`` accepts, tagged ``tags``."""
    target = Path(path)
    repo_tags = [docker_repo_tag(t) for t in tags]
    manifest = image.manifest()
    raw_config = image.config_bytes()
    config_name = f"{manifest.config.digest.hex}.json"

    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w+b") as out:
            _add_bytes(out, config_name, raw_config)
            layer_names: list[str] = []
            written: set[str] = set()
            for i, layer in enumerate(image.layers()):
                desc = layer.descriptor()
                if compressed_layers:
                    name = _compressed_name(desc.digest, desc.media_type)
                else:
                    name = f"{layer.diff_id().hex}/layer.tar"
                layer_names.append(name)
                # An image may list the same layer twice; docker save stores it once.
                if name in written:
                    continue
                written.add(name)
                what = f"layer {i} ({desc.digest.short})"
                if compressed_layers:
                    _add_stream(out, name, layer.open_compressed(), desc.digest, what)
                else:
                    out.write(_header(name.split("/")[0] + "/", 0, directory=True))
                    _add_stream(out, name, layer.open_uncompressed(), layer.diff_id(), what)

            entry: dict[str, Any] = {
                "Config": config_name,
                "RepoTags": [f"{n}:{t}" for n, t in repo_tags],
                "Layers": layer_names,
            }
            _add_bytes(out, "manifest.json", json.dumps([entry], separators=(",", ":")).encode())
            if repo_tags and layer_names:
                # The pre-1.10 format's map of repository -> tag -> top layer id;
                # loaders read it only without manifest.json, but docker save writes it.
                top = layer_names[-1].split("/")[0].split(".")[0]
                repos: dict[str, dict[str, str]] = {}
                for n, t in repo_tags:
                    repos.setdefault(n, {})[t] = top
                _add_bytes(
                    out, "repositories",
                    json.dumps(repos, sort_keys=True, separators=(",", ":")).encode(),
                )
            out.write(b"\0" * (2 * _BLOCK))
            _pad_record = (-out.tell()) % _RECORD
            out.write(b"\0" * _pad_record)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.debug("wrote %s to docker archive %s as %s", manifest.digest, target, list(tags))
    return target
