"""The image config: platform, run settings, rootfs diff_ids and history.

OCI image spec, "Image Configuration"; Docker's image spec v1.2 is the same
document with a few more fields under ``config`` (Healthcheck, OnBuild, Shell,
ArgsEscaped...). An ``ImageConfig`` wraps the whole JSON document, so fields
kanipy does not know survive untouched, and keeps the bytes it was parsed from:
an unchanged config serialises back to exactly those bytes, so its digest
never changes by being read (DESIGN decision 6).

Every ``with_*`` method returns a new ImageConfig; inputs are never edited.
``to_bytes()`` of a changed config is compact JSON with sorted keys: the same
content always gives the same bytes, which ``--reproducible`` relies on.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kanipy.errors import ConfigError
from kanipy.fieldwise import Fieldwise
from kanipy.oci.descriptor import Platform
from kanipy.oci.digest import Digest

log = logging.getLogger(__name__)

# The PATH a RUN step and the final image get when the base sets none, as
# BuildKit's FROM scratch image has (moby/buildkit, system.DefaultPathEnv).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# with_config() keyword -> the key under "config" in the image spec.
CONFIG_KEYS = {
    "user": "User",
    "exposed_ports": "ExposedPorts",
    "env": "Env",
    "entrypoint": "Entrypoint",
    "cmd": "Cmd",
    "volumes": "Volumes",
    "working_dir": "WorkingDir",
    "labels": "Labels",
    "stop_signal": "StopSignal",
    "healthcheck": "Healthcheck",
    "on_build": "OnBuild",
    "shell": "Shell",
    "args_escaped": "ArgsEscaped",
}

# with_metadata() keyword -> top-level key.
TOP_KEYS = {
    "created": "created",
    "author": "author",
    "architecture": "architecture",
    "os": "os",
    "variant": "variant",
    "os_version": "os.version",
}


@dataclass(frozen=True, repr=False, eq=False)
class HistoryEntry(Fieldwise):
    """One ``history`` record: which instruction made a layer, or made none."""

    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("created", "created_by", "author", "comment"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.empty_layer:
            out["empty_layer"] = True
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HistoryEntry:
        return cls(
            created=data.get("created"),
            created_by=data.get("created_by"),
            author=data.get("author"),
            comment=data.get("comment"),
            empty_layer=bool(data.get("empty_layer", False)),
        )


class ImageConfig:
    """An image config document; read-only, with copy-on-write ``with_*`` changes."""

    __slots__ = ("_doc", "_raw")

    def __init__(self, doc: dict[str, Any], raw: bytes | None = None) -> None:
        # Callers hand over ownership of ``doc``; nothing edits it afterwards.
        self._doc = doc
        self._raw = raw

    @classmethod
    def parse(cls, raw: bytes) -> ImageConfig:
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"invalid image config: not JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise ConfigError("invalid image config: not a JSON object")
        return cls(doc, bytes(raw))

    # -- serialisation --------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The original bytes if unchanged since parsing, else canonical JSON."""
        if self._raw is not None:
            return self._raw
        return json.dumps(
            self._doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()

    @property
    def digest(self) -> Digest:
        return Digest.of_bytes(self.to_bytes())

    def to_json(self) -> dict[str, Any]:
        """A deep copy of the document, free to edit."""
        return copy.deepcopy(self._doc)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageConfig) and self._doc == other._doc

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    def __repr__(self) -> str:
        return f"ImageConfig({self.platform}, {len(self.diff_ids)} layers)"

    # -- top-level fields ----------------------------------------------------

    @property
    def architecture(self) -> str:
        return str(self._doc.get("architecture", ""))

    @property
    def os(self) -> str:
        return str(self._doc.get("os", ""))

    @property
    def variant(self) -> str | None:
        return self._doc.get("variant") or None

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant, self._doc.get("os.version"))

    @property
    def created(self) -> str | None:
        return self._doc.get("created")

    @property
    def author(self) -> str | None:
        return self._doc.get("author")

    @property
    def diff_ids(self) -> tuple[Digest, ...]:
        rootfs = self._doc.get("rootfs") or {}
        return tuple(Digest.parse(d) for d in rootfs.get("diff_ids") or ())

    @property
    def history(self) -> tuple[HistoryEntry, ...]:
        return tuple(HistoryEntry.from_json(h) for h in self._doc.get("history") or ())

    # -- the "config" object (run settings) ------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        """A copy of the run settings object (``Env``, ``Cmd``, ...)."""
        return copy.deepcopy(self._doc.get("config") or {})

    def _get(self, key: str) -> Any:
        return copy.deepcopy((self._doc.get("config") or {}).get(key))

    @property
    def env(self) -> list[str]:
        return list(self._get("Env") or [])

    @property
    def cmd(self) -> list[str] | None:
        return self._get("Cmd")

    @property
    def entrypoint(self) -> list[str] | None:
        return self._get("Entrypoint")

    @property
    def working_dir(self) -> str:
        return str(self._get("WorkingDir") or "")

    @property
    def user(self) -> str:
        return str(self._get("User") or "")

    @property
    def labels(self) -> dict[str, str]:
        return dict(self._get("Labels") or {})

    @property
    def exposed_ports(self) -> dict[str, Any]:
        return dict(self._get("ExposedPorts") or {})

    @property
    def volumes(self) -> dict[str, Any]:
        return dict(self._get("Volumes") or {})

    @property
    def stop_signal(self) -> str | None:
        return self._get("StopSignal")

    @property
    def healthcheck(self) -> dict[str, Any] | None:
        return self._get("Healthcheck")

    @property
    def on_build(self) -> list[str]:
        return list(self._get("OnBuild") or [])

    @property
    def shell(self) -> list[str] | None:
        return self._get("Shell")

    @property
    def args_escaped(self) -> bool:
        return bool(self._get("ArgsEscaped"))

    # -- changes ---------------------------------------------------------------

    def _changed(self, doc: dict[str, Any]) -> ImageConfig:
        return ImageConfig(doc, None)

    def with_config(self, **changes: Any) -> ImageConfig:
        """Set run settings by snake_case name (``env=[...]``, ``working_dir="/app"``).

        ``None`` removes the setting. Values are stored as given (lists, dicts).
        """
        doc = self.to_json()
        section = doc.get("config")
        if not isinstance(section, dict):
            section = {}
        for name, value in changes.items():
            key = CONFIG_KEYS.get(name)
            if key is None:
                raise TypeError(f"with_config: unknown setting {name!r}")
            if value is None:
                section.pop(key, None)
            else:
                section[key] = copy.deepcopy(value)
        doc["config"] = section
        return self._changed(doc)

    def with_metadata(self, **changes: Any) -> ImageConfig:
        """Set top-level fields: created, author, architecture, os, variant, os_version."""
        doc = self.to_json()
        for name, value in changes.items():
            key = TOP_KEYS.get(name)
            if key is None:
                raise TypeError(f"with_metadata: unknown field {name!r}")
            if value is None:
                doc.pop(key, None)
            else:
                doc[key] = value
        return self._changed(doc)

    def with_env(self, pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> ImageConfig:
        """ENV: set each KEY=VALUE with Docker's semantics (see ``env_set``)."""
        env = self.env
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        for key, value in items:
            env = env_set(env, key, value)
        return self.with_config(env=env)

    def with_labels(self, labels: Mapping[str, str]) -> ImageConfig:
        """LABEL: merge into the existing labels, later values winning."""
        merged = self.labels
        merged.update(labels)
        return self.with_config(labels=merged)

    def with_layer(self, diff_id: Digest, history: HistoryEntry) -> ImageConfig:
        """Append a layer: its diff_id to rootfs and a non-empty history entry."""
        doc = self.to_json()
        rootfs = doc.get("rootfs")
        if not isinstance(rootfs, dict):
            rootfs = {}
        rootfs["type"] = "layers"
        rootfs["diff_ids"] = [*(rootfs.get("diff_ids") or []), str(diff_id)]
        doc["rootfs"] = rootfs
        entry = HistoryEntry(
            history.created, history.created_by, history.author, history.comment, False
        )
        doc["history"] = [*(doc.get("history") or []), entry.to_json()]
        return self._changed(doc)

    def with_history(self, entry: HistoryEntry) -> ImageConfig:
        """Append a history entry for an instruction that made no layer (empty_layer)."""
        doc = self.to_json()
        entry = HistoryEntry(entry.created, entry.created_by, entry.author, entry.comment, True)
        doc["history"] = [*(doc.get("history") or []), entry.to_json()]
        return self._changed(doc)


def new_config(platform: Platform) -> ImageConfig:
    """The config of ``FROM scratch``: as BuildKit makes it, PATH set and WorkingDir ``/``."""
    doc: dict[str, Any] = {
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {"Env": [f"PATH={DEFAULT_PATH}"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    if platform.variant:
        doc["variant"] = platform.variant
    if platform.os_version:
        doc["os.version"] = platform.os_version
    return ImageConfig(doc)


# -- Env as an ordered KEY=VALUE list -----------------------------------------------


def env_key(item: str) -> str:
    return item.split("=", 1)[0]


def env_get(env: Sequence[str], key: str) -> str | None:
    """The value of ``key``; the last entry wins, as for a process environment."""
    for item in reversed(env):
        name, sep, value = item.partition("=")
        if name == key:
            return value if sep else ""
    return None


def env_set(env: Sequence[str], key: str, value: str) -> list[str]:
    """Docker's ENV: replace ``key`` where it already stands, else append it.

    Keys compare case-sensitively (Linux images); duplicates of ``key`` after
    the first are dropped so the result has one entry per key.
    """
    if not key or "=" in key:
        raise ValueError(f"invalid environment variable name {key!r}")
    item = f"{key}={value}"
    out: list[str] = []
    placed = False
    for existing in env:
        if env_key(existing) == key:
            if not placed:
                out.append(item)
                placed = True
        else:
            out.append(existing)
    if not placed:
        out.append(item)
    return out


def env_to_dict(env: Sequence[str]) -> dict[str, str]:
    """The environment as a dict, in first-seen order, later values winning."""
    out: dict[str, str] = {}
    for item in env:
        name, _, value = item.partition("=")
        out[name] = value
    return out
