"""Platform selection from an index: the one behaviour, for registry pulls and OCI layouts."""

from __future__ import annotations

import pytest

from kanipy.errors import PlatformNotFoundError, UsageError
from kanipy.oci import mediatypes as mt
from kanipy.oci.descriptor import Descriptor, Platform
from kanipy.oci.digest import Digest
from kanipy.oci.manifest import build_index

ATTESTATION = {"vnd.docker.reference.type": "attestation-manifest"}


def _entry(n: int, platform: str | None, media_type: str = mt.OCI_MANIFEST,
           annotations: dict[str, str] | None = None) -> Descriptor:
    """Index entry number ``n`` (its digest is ``n`` repeated) for ``os/arch[/variant]``."""
    parsed = None
    if platform is not None:
        os_name, arch, *variant = platform.split("/")
        # As written in the index, not normalized: the index may spell it any way.
        parsed = Platform(os_name, arch, variant[0] if variant else None)
    return Descriptor(media_type, Digest("sha256", str(n) * 64), 100,
                      annotations=annotations, platform=parsed)


@pytest.mark.parametrize(
    ("entries", "want", "chosen"),
    [
        ([_entry(1, "linux/arm64/v8"), _entry(2, "linux/amd64")], "linux/amd64", 2),
        ([_entry(1, "linux/amd64"), _entry(2, "linux/amd64")], "linux/amd64", 1),
        ([_entry(1, "windows/amd64"), _entry(2, "linux/amd64")], "linux/amd64", 2),
        ([_entry(1, "linux/x86_64")], "linux/amd64", 1),
        ([_entry(1, "linux/amd64")], "linux/x86_64", 1),
        ([_entry(1, "linux/amd64/v1")], "linux/amd64", 1),
        ([_entry(1, "linux/arm64/v8")], "linux/arm64", 1),
        ([_entry(1, "linux/arm64")], "linux/arm64/v8", 1),
        ([_entry(1, "linux/aarch64")], "linux/arm64", 1),
        ([_entry(1, "linux/arm/v6"), _entry(2, "linux/arm/v7")], "linux/arm", 2),
        ([_entry(1, "linux/arm/v6"), _entry(2, "linux/arm/v7")], "linux/arm/v7", 2),
        ([_entry(1, "linux/arm/v7"), _entry(2, "linux/arm/v6")], "linux/arm/v6", 2),
        ([_entry(1, "linux/arm")], "linux/arm/v7", 1),
        ([_entry(1, "linux/arm/v7")], "linux/armhf", 1),
        ([_entry(1, "linux/arm/v6")], "linux/armel", 1),
        ([_entry(1, "linux/386")], "linux/i386", 1),
        ([_entry(1, "unknown/unknown", annotations=ATTESTATION), _entry(2, "linux/amd64")],
         "linux/amd64", 2),
        ([_entry(1, "linux/amd64", "application/vnd.example.signature+json"),
          _entry(2, "linux/amd64")], "linux/amd64", 2),
        ([_entry(1, "linux/amd64", "")], "linux/amd64", 1),
        ([_entry(1, None), _entry(2, "linux/amd64")], "linux/amd64", 2),
    ],
    ids=["os-arch", "first-of-equals", "os-must-match", "x86_64-entry", "x86_64-request",
         "amd64-v1-is-amd64", "arm64-v8-entry", "arm64-entry-v8-request", "aarch64-entry",
         "arm-means-v7", "arm-v7-not-first-arm", "arm-v6-exact", "arm-entry-is-v7",
         "armhf-is-arm-v7", "armel-is-arm-v6", "i386-is-386", "attestation-skipped",
         "non-image-entry-skipped", "entry-without-media-type", "entry-without-platform"],
)
def test_select_picks_the_exact_platform(entries: list[Descriptor], want: str,
                                         chosen: int) -> None:
    index = build_index(entries)
    assert index.select(Platform.parse(want)).digest.hex == str(chosen) * 64


@pytest.mark.parametrize(
    ("entries", "want", "listed"),
    [
        ([_entry(1, "linux/arm/v6")], "linux/arm/v7", "linux/arm/v6"),
        ([_entry(1, "linux/arm/v7")], "linux/arm/v6", "linux/arm/v7"),
        ([_entry(1, "linux/amd64/v3")], "linux/amd64", "linux/amd64/v3"),
        ([_entry(1, "linux/arm64/v9")], "linux/arm64", "linux/arm64/v9"),
        ([_entry(1, "windows/amd64"), _entry(2, "linux/arm64")], "linux/amd64",
         "windows/amd64, linux/arm64"),
        ([_entry(1, "unknown/unknown", annotations=ATTESTATION)], "linux/amd64", "none"),
    ],
    ids=["no-fallback-to-older-arm", "no-newer-arm", "no-other-amd64-level",
         "no-other-arm64-level", "lists-every-platform", "attestations-not-offered"],
)
def test_select_without_a_match_is_a_usage_error_listing_platforms(
    entries: list[Descriptor], want: str, listed: str
) -> None:
    index = build_index(entries)
    with pytest.raises(PlatformNotFoundError) as err:
        index.select(Platform.parse(want), name="reg.example/app:1")
    assert isinstance(err.value, UsageError) and err.value.exit_code == 2
    message = err.value.message
    assert message.startswith(f"reg.example/app:1 has no image for {Platform.parse(want)}; "
                              f"it has {listed}.")
    # The flags kanipy has: --custom-platform, and FROM --platform in a Dockerfile.
    assert "--custom-platform" in message and "FROM --platform" in message
    assert "unknown" not in message


@pytest.mark.parametrize(
    ("text", "normalized"),
    [("linux/amd64", "linux/amd64"), ("linux/x86_64", "linux/amd64"),
     ("linux/aarch64", "linux/arm64"), ("linux/arm64/v8", "linux/arm64"),
     ("linux/arm", "linux/arm/v7"), ("linux/armhf", "linux/arm/v7"),
     ("linux/armel", "linux/arm/v6"), ("Linux/AMD64", "linux/amd64")],
    ids=["amd64", "x86_64", "aarch64", "arm64-v8", "arm", "armhf", "armel", "case"],
)
def test_parse_normalizes_as_containerd(text: str, normalized: str) -> None:
    assert str(Platform.parse(text)) == normalized
