"""Digests, descriptors, platforms and the blob store."""

from __future__ import annotations

import hashlib
import io

import pytest

from kanipy.errors import IntegrityError
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.descriptor import Descriptor, Platform
from kanipy.oci.digest import Digest, VerifyingReader

EMPTY = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize(
    "text",
    ["sha256:abc", "sha256:" + "A" * 64, "md5:" + "a" * 32, "sha256" + "a" * 64, ""],
    ids=["short", "uppercase", "unknown-alg", "no-colon", "empty"],
)
def test_digest_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        Digest.parse(text)


def test_digest_of_bytes_matches_hashlib() -> None:
    assert str(Digest.of_bytes(b"")) == EMPTY
    assert Digest.parse(EMPTY).hex == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(
    ("want", "entry", "ok"),
    [
        ("linux/amd64", "linux/amd64", True),
        ("linux/arm64", "linux/arm64/v8", True),
        ("linux/arm64/v8", "linux/aarch64", True),
        ("linux/arm/v7", "linux/arm/v6", False),
        ("linux/amd64", "windows/amd64", False),
        ("linux/amd64", "linux/x86_64", True),
    ],
    ids=["same", "arm64-v8-implied", "aarch64-alias", "variant-differs", "os-differs", "x86_64"],
)
def test_platform_matching(want: str, entry: str, ok: bool) -> None:
    assert Platform.parse(want).matches(Platform.parse(entry)) is ok


def test_descriptor_round_trip() -> None:
    data = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": EMPTY,
        "size": 0,
        "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
    }
    desc = Descriptor.from_json(data)
    assert desc.platform == Platform("linux", "arm64", "v8")
    assert desc.to_json() == data


def test_blobstore_stores_verified_content(tmp_path) -> None:
    store = BlobStore(tmp_path)
    digest = store.ingest(io.BytesIO(b"layer"), expected=Digest.of_bytes(b"layer"), size=5)
    assert store.read_bytes(digest) == b"layer"
    assert (tmp_path / "oci-layout").is_file()


def test_blobstore_mismatch_leaves_nothing(tmp_path) -> None:
    store = BlobStore(tmp_path)
    wrong = Digest.of_bytes(b"something else")
    with pytest.raises(IntegrityError, match="digest mismatch"):
        store.ingest(io.BytesIO(b"layer"), expected=wrong)
    assert not store.has(wrong)
    assert not store.has(Digest.of_bytes(b"layer"))
    assert list((tmp_path / "blobs" / ".tmp").iterdir()) == []


def test_verifying_reader_catches_corruption() -> None:
    reader = VerifyingReader(io.BytesIO(b"corrupt"), Digest.of_bytes(b"correct"), 7, "blob x")
    with pytest.raises(IntegrityError, match="blob x: digest mismatch"):
        while reader.read(3):
            pass
