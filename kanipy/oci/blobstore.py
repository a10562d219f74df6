"""A content-addressed blob store on disk, laid out as an OCI image layout.

``ROOT/oci-layout``, ``ROOT/blobs/<alg>/<hex>`` (OCI image spec, "Image Layout").
Blobs appear under their final name only once complete and verified: writers
stream into a temporary file of their own under ``blobs/.tmp``, flush it to
disk, and rename it into place, so a crash or a digest mismatch never leaves
a partial blob that a later build would trust. Many processes may share one
store (``--cache-dir`` on a volume of a CI fleet, issue 13): a reader sees a
whole blob or none, two writers of one blob both succeed (the second rename
replaces identical bytes, and a reader holding the first keeps it), and the
temporary files of writers that died are never read and are removed once
they are old.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from kanipy.errors import IntegrityError
from kanipy.oci.digest import Digest, HashingWriter

_LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
_COPY_CHUNK = 1 << 20
_INGEST_PREFIX = "ingest-"
# A writer's temporary file changes with every write; one untouched this long
# belongs to a writer that died (a download stalled that long has timed out).
STALE_INGEST_SECONDS = 6 * 3600


class BlobWriter(HashingWriter):
    """The object a ``BlobStore.writer()`` block writes to; hashes as it goes."""


class BlobStore:
    """Blobs by digest under ``root``; safe to share between builds and processes."""

    def __init__(
        self, root: str | os.PathLike[str], *, readonly: bool = False, durable: bool = True
    ) -> None:
        """Open (creating when writable) the store at ``root``.

        ``readonly`` creates nothing, so someone else's layout (or a read-only
        mount) can be read without being touched; writing then fails.

        ``durable=False`` skips the fsync of each blob and of its directory: for
        a store that lives only as long as the build (the per-build store under
        the work directory, removed at the end), which a crash of the machine
        takes away whole with the build. Blobs still appear only complete and
        verified under their names. A durable store that hardlinks a blob from a
        store that is not (``link_from``: an OCI layout output) makes it durable
        there.
        """
        self.root = Path(root)
        self.readonly = readonly
        self.durable = durable
        # Blobs this object wrote, hashed as they came in: digest -> (inode, size,
        # mtime_ns) of the file as it was renamed into place (see written_here).
        self._written: dict[Digest, tuple[int, int, int]] = {}
        self._tmp = self.root / "blobs" / ".tmp"
        if readonly:
            return
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        layout = self.root / "oci-layout"
        if not layout.exists():
            # Atomic, as several builds may open a new shared store at once.
            write_file_atomically(layout, json.dumps(_LAYOUT_VERSION).encode())
        self._tmp.mkdir(exist_ok=True)
        remove_stale_ingests(self._tmp, STALE_INGEST_SECONDS)

    def path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def has(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: Digest) -> int:
        return self.path(digest).stat().st_size

    def written_here(self, digest: Digest) -> int | None:
        """The size of blob ``digest`` when this object wrote it (hashing its bytes on
        the way in) and its file is still the one it renamed into place: same inode,
        size and modification time. None otherwise: another process's blob, one
        linked in, or a file rewritten since, whose bytes only a new hash can vouch for.
        This guards against the build's own mistakes and faults, not an adversary:
        a same-size rewrite in place within one filesystem timestamp tick, or one
        that sets the mtime back, goes unseen (only root can write the store).
        """
        seen = self._written.get(digest)
        if seen is None:
            return None
        try:
            st = os.stat(self.path(digest))
        except OSError:
            return None
        if (st.st_ino, st.st_size, st.st_mtime_ns) != seen:
            return None
        return st.st_size

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
        fd, tmp_name = self._mkstemp()
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as raw:
                blob = BlobWriter(raw, algorithm)  # type: ignore[arg-type]
                yield blob
                raw.flush()
                # On disk before it has its name: after a crash of the machine a
                # shared store must not hold a blob whose bytes never arrived.
                if self.durable:
                    os.fsync(raw.fileno())
                # mkstemp made it 0600; a store shared by builds running as other
                # users must stay readable by them.
                os.fchmod(raw.fileno(), 0o644)
                st = os.fstat(raw.fileno())
            if size is not None and blob.size != size:
                raise IntegrityError(
                    f"{what}: size mismatch, expected {size} bytes, got {blob.size}"
                )
            if expected is not None and blob.digest != expected:
                raise IntegrityError(
                    f"{what}: digest mismatch, expected {expected}, got {blob.digest}"
                )
            final = self.path(blob.digest)
            self._make_below_root(final.parent)
            os.replace(tmp, final)
            if self.durable:
                _fsync_directory(final.parent)
            self._written[blob.digest] = (st.st_ino, st.st_size, st.st_mtime_ns)
        finally:
            tmp.unlink(missing_ok=True)

    def _mkstemp(self) -> tuple[int, str]:
        try:
            return tempfile.mkstemp(dir=self._tmp, prefix=_INGEST_PREFIX)
        except FileNotFoundError:
            # Someone removed the empty ingest directory (a layout writer tidying
            # up after itself); make it again.
            self._make_below_root(self._tmp)
            return tempfile.mkstemp(dir=self._tmp, prefix=_INGEST_PREFIX)

    def _make_below_root(self, directory: Path) -> None:
        """Make ``directory`` and those between it and the root, never the root itself.

        A store whose root is gone was removed on purpose (the per-build store goes
        with its build's work directory): a download still running on an abandoned
        thread then fails here rather than bring the work directory back.
        """
        missing: list[Path] = []
        while directory != self.root and not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for path in reversed(missing):
            path.mkdir(exist_ok=True)  # FileNotFoundError when the root is gone

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
        self._make_below_root(dst.parent)
        try:
            os.link(other.path(digest), dst)
        except FileExistsError:
            return  # another process put it there first; blobs are named by content
        except OSError:
            with other.open(digest) as src:
                self.ingest(src, expected=digest, what=str(digest))
            return
        if self.durable and not other.durable:
            # The bytes were written without fsync (a per-build store); this
            # store keeps them beyond the build, so they go to disk now.
            _fsync_path(dst)
            _fsync_directory(dst.parent)


def remove_stale_ingests(directory: Path, older_than: float) -> int:
    """Remove writers' temporary files untouched for ``older_than`` seconds; how many.

    Their writers died (killed, out of memory, the machine went down); live
    writers' files are younger and are left alone. Errors are ignored: another
    process may be removing the same files.
    """
    removed = 0
    cutoff = time.time() - older_than
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(_INGEST_PREFIX):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


def write_file_atomically(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` whole or keeps what it had: a temporary file beside it
    is renamed over it (mode 0644, readable by builds of other users)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_path(path: Path) -> None:
    """fsync the file at ``path`` (a blob linked in from a store that did not)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable; not every filesystem can (ignored there)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
