"""``WWW-Authenticate`` challenges (RFC 7235): what a registry's 401, or its ``/v2/`` ping,
asks for. The transport reads them when it pings a host; ``auth`` answers them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kanipy.fieldwise import Fieldwise

_PARAM_RE = re.compile(r'([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


@dataclass(frozen=True, repr=False, eq=False)
class Challenge(Fieldwise):
    """One parsed ``WWW-Authenticate`` header: ``scheme`` is lowercase (bearer, basic)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_challenge(header: str) -> Challenge | None:
    """``Bearer realm="...",service="...",scope="..."`` -> Challenge; None if absent."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params = {
        m.group(1).lower(): (m.group(2).replace('\\"', '"') if m.group(2) is not None
                             else m.group(3))
        for m in _PARAM_RE.finditer(rest)
    }
    return Challenge(scheme.lower(), params)
