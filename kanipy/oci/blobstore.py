"""A content-addressed blob store on disk, laid out as an OCI image layout.

``ROOT/oci-layout``, ``ROOT/blobs/<alg>/<hex>`` (OCI image spec, "Image Layout").
Blobs appear under their final name only once complete and verified: writers
stream into a temporary file beside them and rename it, so a crash or a
digest mismatch never leaves a partial blob that a later build would trust.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from kanipy.errors import IntegrityError
from kanipy.oci.digest import Digest, HashingWriter

_LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
_COPY_CHUNK = 1 << 20


class BlobWriter(HashingWriter):
    """The object a ``BlobStore.writer()`` block writes to; hashes as it goes."""


class BlobStore:
    """Blobs by digest under ``root``; safe to share between builds and processes."""

    def __init__(self, root: str | os.PathLike[str], *, readonly: bool = False) -> None:
        """Open (creating when writable) the store at ``root``.

        ``readonly`` creates nothing, so someone else's layout (or a read-only
        mount) can be read without being touched; writing then fails.
        """
        self.root = Path(root)
        self.readonly = readonly
        self._tmp = self.root / "blobs" / ".tmp"
        if readonly:
            return
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        layout = self.root / "oci-layout"
        if not layout.exists():
            layout.write_text(json.dumps(_LAYOUT_VERSION))
        self._tmp.mkdir(exist_ok=True)

    def path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def has(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: Digest) -> int:
        return self.path(digest).stat().st_size

    def open(self, digest: Digest) -> BinaryIO:
        return open(self.path(digest), "rb")

    def read_bytes(self, digest: Digest) -> bytes:
        return self.path(digest).read_bytes()

    @contextmanager
    def writer(
        self, expected: Digest | None = None, size: int | None = None, what: str = "blob"
    ) -> Iterator[BlobWriter]:
        """Stream a blob in; on a clean exit it is verified and stored under its digest.

        With ``expected``, a digest or size mismatch raises IntegrityError and
        nothing is stored. The final digest is ``writer.digest`` after the block.
        """
        if self.readonly:
            raise PermissionError(f"blob store {self.root} was opened read-only")
        algorithm = expected.algorithm if expected else "sha256"
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="ingest-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as raw:
                blob = BlobWriter(raw, algorithm)  # type: ignore[arg-type]
                yield blob
                raw.flush()
            if size is not None and blob.size != size:
                raise IntegrityError(
                    f"{what}: size mismatch, expected {size} bytes, got {blob.size}"
                )
            if expected is not None and blob.digest != expected:
                raise IntegrityError(
                    f"{what}: digest mismatch, expected {expected}, got {blob.digest}"
                )
            final = self.path(blob.digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, data: bytes) -> Digest:
        digest = Digest.of_bytes(data)
        if not self.has(digest):
            with self.writer(expected=digest) as out:
                out.write(data)
        return digest

    def ingest(
        self, stream: BinaryIO, expected: Digest | None = None, size: int | None = None,
        what: str = "blob",
    ) -> Digest:
        """Copy ``stream`` into the store, verifying against ``expected`` and ``size``."""
        with self.writer(expected=expected, size=size, what=what) as out:
            shutil.copyfileobj(stream, out, _COPY_CHUNK)  # type: ignore[misc]
        return out.digest

    def link_from(self, other: BlobStore, digest: Digest) -> None:
        """Make ``digest`` from ``other`` available here (hardlink, else copy)."""
        if self.has(digest):
            return
        dst = self.path(digest)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(other.path(digest), dst)
        except OSError:
            with other.open(digest) as src:
                self.ingest(src, expected=digest, what=str(digest))
