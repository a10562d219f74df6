"""Descriptors (OCI image spec, "Content Descriptors") and platforms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kanipy.oci.digest import Digest


@dataclass(frozen=True)
class Platform:
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
        """containerd's normalisation: x86_64 -> amd64, aarch64 -> arm64 (v8), armhf -> arm/v7."""
        arch, variant = self.architecture, self.variant
        if arch in ("x86_64", "x86-64"):
            arch = "amd64"
        elif arch == "aarch64":
            arch = "arm64"
        elif arch == "armhf":
            arch, variant = "arm", variant or "v7"
        elif arch == "armel":
            arch, variant = "arm", variant or "v6"
        if arch == "arm64" and variant == "v8":
            # arm64 without a variant means v8; keep one spelling for comparisons.
            variant = None
        return Platform(self.os, arch, variant, self.os_version, self.os_features)

    def matches(self, other: Platform) -> bool:
        """True when ``other`` (an index entry) serves this requested platform."""
        a, b = self.normalized(), other.normalized()
        if a.os != b.os or a.architecture != b.architecture:
            return False
        if a.variant and b.variant and a.variant != b.variant:
            return False
        return True

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


@dataclass(frozen=True)
class Descriptor:
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
