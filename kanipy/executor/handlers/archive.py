"""ADD's local archives: recognised by content and extracted inside the root.

Docker decides by content, never by name (BuildKit ``isArchivePath``: the
stream is decompressed when it starts with a gzip, bzip2, xz or zstd magic,
and is an archive when a tar reader finds a first header). Extraction is
``kanipy.fs.unpack.extract_tar`` with ADD's rules: the archive's modes, owners
(unless ``--chown``), mtimes, links and hardlinks are kept, existing
directories take the archive's metadata, and every path is resolved inside
the root, so neither ``..`` nor a symlink (in the archive or already in the
image) can place anything outside it.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

from kanipy.errors import BuildError, IntegrityError
from kanipy.executor.handlers.copy_tree import Ownership
from kanipy.executor.step import StepError
from kanipy.fs.compression import open_decompressed
from kanipy.fs.rootfs import Rootfs
from kanipy.fs.unpack import add_archive_rules, extract_tar, is_tar_stream

log = logging.getLogger(__name__)


def is_tar_archive(path: Path) -> bool:
    """True when ``path`` holds a tar archive, plain or compressed (by content)."""
    try:
        with open(path, "rb") as raw:
            return is_tar_stream(open_decompressed(raw, "auto", str(path)), str(path))
    except (IntegrityError, OSError):
        return False


def extract_archive(path: Path, rootfs: Rootfs, dest: PurePosixPath, owner: Ownership
                    ) -> list[PurePosixPath]:
    """Extract the archive at host ``path`` into the image directory ``dest`` (which
    exists); returns the image paths of its top-level entries."""
    what = f"ADD {path.name}"
    try:
        with open(path, "rb") as raw:
            stats = extract_tar(rootfs, open_decompressed(raw, "auto", what), what=what,
                                rules=add_archive_rules(owner.uid, owner.gid), dest=dest)
    except IntegrityError as exc:
        raise StepError(f"{what}: cannot extract the archive: {exc.message}") from exc
    except BuildError as exc:
        # An entry that would leave the root, a file that cannot be written: the
        # stage loop puts the instruction's location in front.
        raise StepError(exc.message) from exc
    return sorted(dest / name for name in stats.top)
