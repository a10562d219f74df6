"""Build contexts downloaded over HTTP(S): a tarball at a URL.

Kaniko's "Https Context" and BuildKit's remote tarball: the body is saved to
the work dir while it streams (memory does not grow with its size), then
extracted like a local context tarball. Redirects are followed; the URL's
user-info, if any, is never logged.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import requests

from kanipy.errors import ContextError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def shown_url(url: str) -> str:
    """``url`` without a ``user:password@`` part."""
    return re.sub(r"//[^/@]*@", "//", url)


def download(url: str, target: Path, timeout: float = 60.0) -> Path:
    """Stream ``url`` into the file ``target``; returns it."""
    log.info("downloading context %s", shown_url(url))
    try:
        with requests.get(url, stream=True, timeout=timeout) as response:
            if response.status_code != 200:
                raise ContextError(f"--context {shown_url(url)}: the server answered "
                                   f"{response.status_code} {response.reason}")
            with open(target, "wb") as out:
                for chunk in response.iter_content(_CHUNK):
                    out.write(chunk)
    except requests.RequestException as exc:
        raise ContextError(f"--context {shown_url(url)}: cannot download it: "
                           f"{type(exc).__name__}") from None
    return target
