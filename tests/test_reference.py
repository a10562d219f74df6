"""Image references: Docker's grammar and normalization, as a user types them."""

from __future__ import annotations

import pytest

from kanipy.errors import InvalidReferenceError, UsageError
from kanipy.oci.digest import Digest
from kanipy.reference import Reference

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest", "api_host"),
    [
        ("busybox", "docker.io", "library/busybox", "latest", None, "registry-1.docker.io"),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None, "registry-1.docker.io"),
        ("user/app", "docker.io", "user/app", "latest", None, "registry-1.docker.io"),
        ("docker.io/busybox", "docker.io", "library/busybox", "latest", None,
         "registry-1.docker.io"),
        ("index.docker.io/library/busybox", "docker.io", "library/busybox", "latest", None,
         "registry-1.docker.io"),
        ("localhost/app", "localhost", "app", "latest", None, "localhost"),
        ("localhost:5000/app:v1", "localhost:5000", "app", "v1", None, "localhost:5000"),
        ("127.0.0.1:5000/a/b/c", "127.0.0.1:5000", "a/b/c", "latest", None, "127.0.0.1:5000"),
        ("ghcr.io/o/r@" + D, "ghcr.io", "o/r", None, D, "ghcr.io"),
        ("quay.io/o/r:t@" + D, "quay.io", "o/r", "t", D, "quay.io"),
        ("my-reg.example.com/a_b/c__d/e-f/g.h", "my-reg.example.com", "a_b/c__d/e-f/g.h",
         "latest", None, "my-reg.example.com"),
        ("a/b:Tag_1.2-x", "docker.io", "a/b", "Tag_1.2-x", None, "registry-1.docker.io"),
        ("[::1]:5000/app", "[::1]:5000", "app", "latest", None, "[::1]:5000"),
    ],
    ids=["hub-short", "hub-tag", "hub-user", "hub-explicit", "hub-index-alias", "localhost",
         "localhost-port-tag", "ip-port-deep", "digest-only", "tag-and-digest", "separators",
         "tag-charset", "ipv6"],
)
def test_parse_normalizes(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None,
    api_host: str,
) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert ref.digest == (Digest.parse(digest) if digest else None)
    assert ref.api_host == api_host
    # Formatting then parsing again is stable.
    assert Reference.parse(str(ref)) == ref


@pytest.mark.parametrize(
    ("text", "points_at"),
    [
        ("Foo/bar", "repository name must be lowercase"),
        ("busybox:", "bad tag"),
        ("busybox:-x", "bad tag"),
        ("busybox:" + "t" * 129, "bad tag"),
        ("busybox@sha256:abc", "bad digest"),
        ("busybox@", "bad digest"),
        ("a//b", "empty path component"),
        ("a/b/", "empty path component"),
        ("a/-b", "bad repository path component '-b'"),
        ("a/b..c", "bad repository path component"),
        ("", "empty"),
        ("bad host.example.com/app", "whitespace"),
        ("-x.example.com/app", "bad registry host"),
        ("a" * 64, "image id"),
        ("@" + D, "no repository name"),
        ("example.com/" + "a" * 250, "longer than 255"),
    ],
    ids=["uppercase", "empty-tag", "tag-dash", "tag-too-long", "short-digest", "empty-digest",
         "double-slash", "trailing-slash", "component-dash", "double-dot", "empty", "space",
         "host-dash", "hex-id", "digest-alone", "too-long"],
)
def test_invalid_reference_names_the_bad_part(text: str, points_at: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        Reference.parse(text)
    assert points_at in info.value.message
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


def test_uppercase_message_quotes_the_reference() -> None:
    with pytest.raises(InvalidReferenceError) as info:
        Reference.parse("Foo/bar")
    assert str(info.value) == 'invalid reference "Foo/bar": repository name must be lowercase'


def test_digest_wins_for_pulls_and_tag_stays_for_display() -> None:
    ref = Reference.parse(f"127.0.0.1:5000/app:v1@{D}")
    assert ref.identifier == D
    assert str(ref) == f"127.0.0.1:5000/app:v1@{D}"
    assert Reference.parse("127.0.0.1:5000/app:v1").identifier == "v1"


def test_with_tag_and_with_digest() -> None:
    ref = Reference.parse("busybox")
    assert str(ref) == "docker.io/library/busybox:latest"
    assert ref.name == "docker.io/library/busybox"
    pinned = ref.with_digest(Digest.parse(D))
    assert str(pinned) == f"docker.io/library/busybox:latest@{D}"
    assert str(pinned.with_tag("v2")) == "docker.io/library/busybox:v2"
    with pytest.raises(InvalidReferenceError):
        ref.with_tag(".bad")
