"""Progress events for pulls and pushes; the CLI decides how to draw them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from kanipy.fieldwise import Fieldwise
from kanipy.oci.digest import Digest

log = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False, eq=False)
class ProgressEvent(Fieldwise):
    """One step of one blob.

    ``phase`` is ``download`` or ``upload`` while bytes move (``done`` of
    ``total``), then ``done``; ``exists`` when nothing had to move (already in
    the store, or already in the registry) and ``mounted`` for a cross-repository
    mount.
    """

    digest: Digest
    done: int
    total: int
    phase: str


ProgressCallback = Callable[[ProgressEvent], None]


def emit(callback: ProgressCallback | None, digest: Digest, done: int, total: int,
         phase: str) -> None:
    """Call ``callback`` with one event, if there is a callback."""
    if callback is not None:
        callback(ProgressEvent(digest=digest, done=done, total=total, phase=phase))
