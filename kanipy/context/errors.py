"""The error every context source raises when it cannot provide a context."""

from __future__ import annotations

from kanipy.errors import UsageError


class ContextError(UsageError):
    """A build context that cannot be read: malformed, unreachable or missing (exit 2)."""
