"""Keeping the Dockerfile inside the build context when the context names it.

A context is often not the user's own (a git repository, a tarball from a
URL): its Dockerfile may be a symlink, and one leading out of the context
(``Dockerfile -> /etc/shadow``) made kanipy read a host file and echo its
first word in the parse error (issue 11). BuildKit reads the Dockerfile from
the context only; so does kanipy: a Dockerfile named inside the context is
resolved with its symlinks followed only while they stay inside. A
Dockerfile the user names outside the context (``--dockerfile /ci/Dockerfile``,
or ``../Dockerfile``) is the user's choice and is read where it is.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from kanipy.errors import ContextError

log = logging.getLogger(__name__)


def dockerfile_in_context(context_root: Path, dockerfile: Path) -> Path:
    """The real path to read ``dockerfile`` from; ContextError (exit 2) when the
    path names a file in ``context_root`` whose symlinks lead out of it."""
    root = Path(os.path.realpath(context_root))
    named = Path(os.path.normpath(os.path.abspath(dockerfile)))
    real = Path(os.path.realpath(dockerfile))
    if not named.is_relative_to(root) or real.is_relative_to(root):
        return real
    raise ContextError(
        f"Dockerfile {str(named.relative_to(root))!r} is a symlink leading outside the "
        f"build context (to {real}); the Dockerfile is read from inside the context only, "
        "as BuildKit does")
