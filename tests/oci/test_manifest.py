"""Manifests and indexes: real documents parse, digests are over raw bytes, builders."""

from __future__ import annotations

import json

import pytest

from kanipy.errors import UsageError
from kanipy.oci import mediatypes as mt
from kanipy.oci.descriptor import Descriptor, Platform
from kanipy.oci.digest import Digest
from kanipy.oci.manifest import (
    Index,
    Manifest,
    ManifestError,
    PlatformNotFoundError,
    build_index,
    build_manifest,
    parse_manifest,
)

from .conftest import DATA

EMPTY = Digest.of_bytes(b"")


@pytest.mark.parametrize(
    ("filename", "header", "kind", "media_type", "count"),
    [
        ("oci-manifest-umoci.json", mt.OCI_MANIFEST, Manifest, mt.OCI_MANIFEST, 1),
        # umoci writes no mediaType; the structure says what it is.
        ("oci-manifest-umoci.json", None, Manifest, mt.OCI_MANIFEST, 1),
        ("docker-manifest-skopeo.json", None, Manifest, mt.DOCKER_MANIFEST, 1),
        ("docker-manifest-skopeo.json", "application/json", Manifest, mt.DOCKER_MANIFEST, 1),
        ("docker-manifest-list.json", None, Index, mt.DOCKER_MANIFEST_LIST, 4),
        ("oci-index-attestations.json", mt.OCI_INDEX, Index, mt.OCI_INDEX, 3),
    ],
    ids=["oci-header", "oci-no-mediatype", "docker-v2s2", "docker-generic-header",
         "docker-list", "oci-index-buildkit"],
)
def test_parse_real_documents(
    filename: str, header: str | None, kind: type, media_type: str, count: int
) -> None:
    raw = (DATA / filename).read_bytes()
    parsed = parse_manifest(raw, header)
    assert isinstance(parsed, kind)
    assert parsed.media_type == media_type
    assert parsed.raw == raw
    assert parsed.digest == Digest.of_bytes(raw)
    if isinstance(parsed, Manifest):
        assert len(parsed.layers) == count
        assert parsed.config.size > 0
    else:
        assert isinstance(parsed, Index)
        assert len(parsed.manifests) == count


def test_digest_is_over_raw_bytes_not_a_reserialisation() -> None:
    raw = (DATA / "docker-manifest-list.json").read_bytes()  # indented, as Docker writes
    parsed = parse_manifest(raw, None)
    assert parsed.digest == Digest.of_bytes(raw)
    assert parsed.digest != Digest.of_bytes(json.dumps(json.loads(raw)).encode())


@pytest.mark.parametrize(
    ("raw", "header"),
    [
        ((DATA / "docker-manifest-schema1.json").read_bytes(), None),
        (b"{}", mt.DOCKER_MANIFEST_V1_SIGNED),
    ],
    ids=["schemaVersion-1", "schema1-content-type"],
)
def test_schema1_refused_with_advice(raw: bytes, header: str | None) -> None:
    advice = "schema 1.*re-push the image in Docker schema 2 or OCI"
    with pytest.raises(ManifestError, match=advice):
        parse_manifest(raw, header)


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1]", b'{"schemaVersion":2}',
     b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
     b'"config":{"digest":"sha256:1"},"layers":[]}',
     b'{"schemaVersion":2,"mediaType":"application/vnd.example.other+json"}'],
    ids=["not-json", "not-object", "no-structure", "bad-digest", "unknown-type"],
)
def test_malformed_manifests_rejected(raw: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(raw, None)


@pytest.mark.parametrize(
    ("filename", "want", "digit"),
    [
        ("docker-manifest-list.json", "linux/amd64", "1"),
        ("docker-manifest-list.json", "linux/arm/v7", "3"),
        ("docker-manifest-list.json", "linux/arm/v6", "2"),
        ("docker-manifest-list.json", "linux/arm64", "4"),
        ("docker-manifest-list.json", "linux/aarch64", "4"),
        ("oci-index-attestations.json", "linux/arm64/v8", "b"),
        ("oci-index-attestations.json", "linux/amd64", "a"),
    ],
    ids=["amd64", "arm-v7-not-first-arm", "arm-v6", "arm64-v8-entry", "aarch64-alias",
         "arm64-variant-less-entry", "attestations-skipped"],
)
def test_select_platform(filename: str, want: str, digit: str) -> None:
    index = parse_manifest((DATA / filename).read_bytes(), None)
    assert isinstance(index, Index)
    assert index.select(Platform.parse(want)).digest.hex == digit * 64


def test_select_missing_platform_lists_what_exists() -> None:
    index = parse_manifest((DATA / "oci-index-attestations.json").read_bytes(), None)
    assert isinstance(index, Index)
    with pytest.raises(PlatformNotFoundError) as err:
        index.select(Platform.parse("linux/s390x"))
    assert isinstance(err.value, UsageError) and err.value.exit_code == 2
    assert "linux/s390x" in str(err.value)
    assert "linux/amd64, linux/arm64" in str(err.value)  # attestation entry not offered
    assert "unknown" not in str(err.value)


@pytest.mark.parametrize(
    ("media_type", "config_type", "layer_type"),
    [
        (mt.OCI_MANIFEST, mt.OCI_CONFIG, mt.OCI_LAYER_GZIP),
        (mt.DOCKER_MANIFEST, mt.DOCKER_CONFIG, mt.DOCKER_LAYER_GZIP),
    ],
    ids=["oci", "docker"],
)
def test_build_manifest_round_trips(media_type: str, config_type: str, layer_type: str) -> None:
    config = Descriptor(config_type, EMPTY, 0)
    layers = [Descriptor(layer_type, Digest("sha256", "1" * 64), 10)]
    built = build_manifest(config, layers, media_type, {"org.example.b": "2", "org.example.a": "1"})
    doc = json.loads(built.raw)
    assert doc["schemaVersion"] == 2 and doc["mediaType"] == media_type
    assert list(doc) == ["schemaVersion", "mediaType", "config", "layers", "annotations"]
    again = parse_manifest(built.raw, None)
    assert again == built
    assert again.digest == Digest.of_bytes(built.raw)
    # Same inputs, same bytes.
    assert build_manifest(config, layers, media_type,
                          {"org.example.a": "1", "org.example.b": "2"}).raw == built.raw


def test_docker_manifest_needs_docker_config() -> None:
    with pytest.raises(ValueError, match="Docker manifest needs"):
        build_manifest(Descriptor(mt.OCI_CONFIG, EMPTY, 0), [], mt.DOCKER_MANIFEST)


def test_build_index_selects_its_entries() -> None:
    amd = Descriptor(mt.OCI_MANIFEST, Digest("sha256", "a" * 64), 5, platform=Platform())
    arm = Descriptor(mt.OCI_MANIFEST, Digest("sha256", "b" * 64), 5,
                     platform=Platform("linux", "arm64"))
    index = build_index([amd, arm])
    again = parse_manifest(index.raw, mt.OCI_INDEX)
    assert isinstance(again, Index)
    assert again.select(Platform.parse("linux/arm64/v8")) == arm
    assert json.loads(index.raw)["mediaType"] == mt.OCI_INDEX
    docker = build_index([amd, arm], mt.DOCKER_MANIFEST_LIST)
    assert parse_manifest(docker.raw, None).media_type == mt.DOCKER_MANIFEST_LIST
