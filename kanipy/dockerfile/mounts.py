"""``RUN --mount`` values: the CSV ``key=value`` fields, checked, with BuildKit's defaults.

Parsed once as written (to find ``from=`` stages while planning) and again after the
value is expanded (Dockerfile reference, "RUN --mount"; BuildKit's instructions/runmount).
"""

from __future__ import annotations

import logging

from kanipy.dockerfile.instructions import Mount
from kanipy.dockerfile.values import SyntaxProblem, parse_id

log = logging.getLogger(__name__)

_MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_MOUNT_KEYS = {
    "type", "target", "dst", "destination", "source", "src", "from", "readonly", "ro",
    "readwrite", "rw", "id", "sharing", "mode", "uid", "gid", "required", "size", "env",
}
_MOUNT_BOOLS = {"readonly", "ro", "readwrite", "rw", "required"}


def parse_mount(spec: str) -> Mount:
    """One ``--mount`` value (CSV ``key=value`` fields), validated as BuildKit does."""
    fields: dict[str, str] = {}
    for part in _split_csv(spec):
        key, has_value, value = part.partition("=")
        key = key.strip().lower()
        if key not in _MOUNT_KEYS:
            raise SyntaxProblem(f"unexpected key {key!r} in --mount={spec}")
        if not has_value:
            if key not in _MOUNT_BOOLS:
                raise SyntaxProblem(f"--mount field {key!r} needs a value ({key}=...)")
            value = "true"
        fields[key] = value
    mtype = fields.get("type", "bind").lower()
    if mtype not in _MOUNT_TYPES:
        raise SyntaxProblem(
            f"unsupported mount type {mtype!r} in --mount={spec} (one of {', '.join(_MOUNT_TYPES)})"
        )

    def boolean(*names: str) -> bool | None:
        for name in names:
            if name in fields:
                value = fields[name].lower()
                if value not in ("true", "false", "1", "0"):
                    raise SyntaxProblem(f"invalid value {fields[name]!r} for {name} in --mount")
                return value in ("true", "1")
        return None

    def integer(name: str, base: int = 10) -> int | None:
        return parse_id(name, fields[name], base) if name in fields else None

    target = fields.get("target") or fields.get("dst") or fields.get("destination")
    readonly = boolean("readonly", "ro")
    readwrite = boolean("readwrite", "rw")
    if readonly is None:
        readonly = (mtype == "bind") if readwrite is None else not readwrite
    sharing = fields.get("sharing")
    if sharing is not None and sharing not in ("shared", "private", "locked"):
        raise SyntaxProblem(f"unsupported sharing value {sharing!r} (shared, private or locked)")
    if sharing is not None and mtype != "cache":
        raise SyntaxProblem("sharing is only valid for cache mounts")
    ident = fields.get("id")
    if mtype == "cache":
        sharing = sharing or "shared"
    if mtype in ("bind", "cache", "tmpfs") and not target:
        raise SyntaxProblem(f"--mount={spec}: a {mtype} mount needs a target")
    if mtype == "secret" and not target and "env" not in fields:
        if not ident:
            raise SyntaxProblem(f"--mount={spec}: a secret mount needs an id or a target")
        target = f"/run/secrets/{ident}"
    if mtype == "secret" and not ident and target:
        ident = target.rstrip("/").rsplit("/", 1)[-1]
    if mtype == "ssh":
        ident = ident or "default"
    if mtype == "cache" and not ident:
        ident = target
    mode = integer("mode", 8)
    if mode is None:
        mode = {"cache": 0o755, "secret": 0o400, "ssh": 0o600}.get(mtype)
    return Mount(
        type=mtype,
        target=target,
        source=fields.get("source") or fields.get("src"),
        from_=fields.get("from"),
        readonly=readonly,
        id=ident,
        sharing=sharing,
        mode=mode,
        uid=integer("uid"),
        gid=integer("gid"),
        required=bool(boolean("required")),
        size=fields.get("size"),
        env=fields.get("env"),
        spec=spec,
    )


def _split_csv(text: str) -> list[str]:
    """Comma-separated fields; double quotes protect commas (Go encoding/csv)."""
    out: list[str] = []
    field: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append("".join(field))
            field = []
        else:
            field.append(ch)
    if quoted:
        raise SyntaxProblem(f"unterminated quote in --mount={text}")
    out.append("".join(field))
    return [f for f in out if f.strip()]
