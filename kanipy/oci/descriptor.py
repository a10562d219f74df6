"""Descriptors (OCI image spec, "Content Descriptors") and platforms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kanipy.fieldwise import Fieldwise
from kanipy.oci.digest import Digest


@dataclass(frozen=True, repr=False, eq=False)
class Platform(Fieldwise):
    """An os/architecture/variant triple, as in an image index entry."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/arm64/v8``, ``linux/amd64``; architecture aliases normalised."""
        parts = text.strip().split("/")
        if len(parts) < 2 or len(parts) > 3 or not all(parts):
            raise ValueError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT]")
        os_name, arch = parts[0].lower(), parts[1].lower()
        variant = parts[2].lower() if len(parts) == 3 else None
        return cls(os_name, arch, variant).normalized()

    def normalized(self) -> Platform:
        """containerd's ``platforms.Normalize``: one spelling per os/architecture/variant.

        x86_64 -> amd64, aarch64 -> arm64, i386 -> 386; armhf -> arm/v7, armel ->
        arm/v6; arm without a variant means arm/v7 and arm64 without one means v8,
        so arm64/v8 is spelled arm64. Comparisons are made between normalized values.
        """
        os_name = self.os.lower()
        arch, variant = self.architecture.lower(), (self.variant or "").lower()
        if arch == "i386":
            arch, variant = "386", ""
        elif arch in ("x86_64", "x86-64", "amd64"):
            arch = "amd64"
            variant = "" if variant == "v1" else variant
        elif arch in ("aarch64", "arm64"):
            arch = "arm64"
            variant = {"8": "", "v8": "", "v8.0": "", "9": "v9", "9.0": "v9",
                       "v9.0": "v9"}.get(variant, variant)
        elif arch == "armhf":
            arch, variant = "arm", "v7"
        elif arch == "armel":
            arch, variant = "arm", "v6"
        elif arch == "arm":
            variant = {"": "v7", "7": "v7", "5": "v5", "6": "v6", "8": "v8"}.get(
                variant, variant)
        return Platform(os_name, arch, variant or None, self.os_version, self.os_features)

    def matches(self, other: Platform) -> bool:
        """True when ``other`` (an index entry) is exactly this platform, once normalized.

        As containerd's ``platforms.Only`` matcher, minus its fallback to older
        arm variants: os, architecture and variant must all agree, so a request
        for linux/arm/v7 never gets an arm/v6 image.
        """
        a, b = self.normalized(), other.normalized()
        return (a.os, a.architecture, a.variant) == (b.os, b.architecture, b.variant)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Platform:
        return cls(
            os=data.get("os", ""),
            architecture=data.get("architecture", ""),
            variant=data.get("variant") or None,
            os_version=data.get("os.version") or None,
            os_features=tuple(data.get("os.features") or ()),
        )

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


@dataclass(frozen=True, repr=False, eq=False)
class Descriptor(Fieldwise):
    """What a manifest says about a piece of content: type, digest, size and extras."""

    media_type: str
    digest: Digest
    size: int
    annotations: dict[str, str] | None = field(default=None, compare=False, hash=False)
    platform: Platform | None = None
    urls: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Descriptor:
        platform = data.get("platform")
        return cls(
            media_type=data.get("mediaType", ""),
            digest=Digest.parse(data["digest"]),
            size=int(data["size"]),
            annotations=data.get("annotations") or None,
            platform=Platform.from_json(platform) if platform else None,
            urls=tuple(data.get("urls") or ()),
        )
