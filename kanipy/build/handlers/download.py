"""ADD <url>: a remote file downloaded into the root, verified before it is written.

Docker's rules: the file gets mode 0600 and, when the server sends
Last-Modified, that time as its mtime; ``--checksum=sha256:…`` is checked
before anything lands in the root.
"""

from __future__ import annotations

import email.utils
import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import requests

from kanipy import __version__
from kanipy.errors import BuildError, DockerfileError
from kanipy.oci.digest import Digest, HashingWriter

if TYPE_CHECKING:
    from kanipy.build.handlers.copy import _Copier


def download(url: str, copier: _Copier, target: PurePosixPath, checksum: str | None,
             where: tuple[int, str]) -> PurePosixPath:
    expected = None
    if checksum:
        try:
            expected = Digest.parse(checksum)
        except ValueError as exc:
            raise DockerfileError(f"ADD --checksum: {exc}", *where) from None
    try:
        resp = requests.get(url, stream=True, timeout=(10, 60),
                            headers={"User-Agent": f"kanipy/{__version__}"})
    except requests.RequestException as exc:
        raise BuildError(f"{where[1]}:{where[0]}: ADD {url}: download failed: {exc}") from exc
    with resp, tempfile.NamedTemporaryFile(delete=False, dir=copier.rootfs.path.parent) as tmp:
        if resp.status_code != 200:
            raise BuildError(f"{where[1]}:{where[0]}: ADD {url}: the server answered "
                             f"{resp.status_code} {resp.reason}")
        hasher = HashingWriter(tmp, expected.algorithm if expected else "sha256")  # type: ignore[arg-type]
        for chunk in resp.iter_content(1 << 20):
            hasher.write(chunk)
    tmp_path = Path(tmp.name)
    try:
        if expected is not None and hasher.digest != expected:
            raise BuildError(
                f"{where[1]}:{where[0]}: ADD {url}: checksum mismatch: expected {expected}, "
                f"got {hasher.digest}; nothing was written")
        mtime = None
        modified = resp.headers.get("Last-Modified")
        if modified:
            try:
                mtime = email.utils.parsedate_to_datetime(modified).timestamp()
            except (TypeError, ValueError):
                mtime = None
        return copier.place_file(tmp_path, target, 0o600, mtime)
    finally:
        tmp_path.unlink(missing_ok=True)
