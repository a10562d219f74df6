"""The KanipyError tree: every failure a user can act on, with its exit code.

Library code raises these; only ``kanipy.cli`` turns them into a message and an
exit status. The message is written for the user: it says what went wrong and,
where there is one, what to do about it.
"""

from __future__ import annotations


class KanipyError(Exception):
    """Base of every error kanipy reports to a user."""

    exit_code = 70
    # The ``name@digest`` of every destination pushed before the failure: the
    # CLI prints them on stdout, so what is reported is what happened (issue 11).
    pushed: tuple[str, ...] = ()

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BuildError(KanipyError):
    """The build itself failed: a RUN exited non-zero, a COPY source is missing.

    ``exit_status`` is the status a RUN step's command exited with, when that is
    what failed (the JSON log's error record carries it as a field).
    """

    exit_code = 1

    def __init__(self, message: str, *, exit_status: int | None = None) -> None:
        super().__init__(message)
        self.exit_status = exit_status


class ConfigError(BuildError):
    """An image config that is not valid JSON or not an object."""


class ManifestError(BuildError):
    """A manifest or index that kanipy cannot use: malformed, unknown type, schema 1."""


class UsageError(KanipyError):
    """Bad flags or a bad image reference."""

    exit_code = 2


class InvalidReferenceError(UsageError):
    """An image reference that does not parse; the message points at the bad part."""


class ContextError(UsageError):
    """A build context that cannot be read: malformed, unreachable or missing (exit 2)."""


class LayoutError(UsageError):
    """An OCI layout path that is missing, malformed, or lacks the asked-for image."""


class PlatformNotFoundError(UsageError):
    """An index has no entry for the requested platform; the message lists those it has."""

    def __init__(self, message: str, available: list[str]) -> None:
        super().__init__(message)
        self.available = available


class DockerfileError(KanipyError):
    """A Dockerfile that cannot be built; reported as ``FILE:LINE: message``."""

    exit_code = 3

    def __init__(self, message: str, line: int | None = None, filename: str = "Dockerfile"):
        self.reason = message
        self.line = line
        self.filename = filename
        where = f"{filename}:{line}" if line is not None else filename
        super().__init__(f"{where}: {message}")


class RegistryError(KanipyError):
    """A registry could not be reached, refused us, or lacks what we asked for.

    ``code`` carries the registry's own diagnostic code (``MANIFEST_UNKNOWN``,
    ``DENIED``) when it sent one; ``status`` the HTTP status, if any.
    """

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        registry: str | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.registry = registry
        self.status = status
        self.code = code

    @property
    def temporary(self) -> bool:
        """True when trying again later may succeed (429, 5xx, no status at all)."""
        return self.status is None or self.status == 429 or self.status >= 500


class ConnectionFailed(RegistryError):
    """The host could not be reached or the TLS handshake failed; no HTTP status.

    ``tls_untrusted``: the server's certificate is not trusted; ``tls_client_cert``:
    the server wants a client certificate (mutual TLS) that was not given or
    that it refused. Neither gets better by retrying or by trying plain HTTP.
    """

    tls_untrusted = False
    tls_client_cert = False


class AuthError(RegistryError):
    """401/403 from a registry, or no usable credentials."""


class NotFoundError(RegistryError):
    """404: a repository, manifest or blob that does not exist."""


class IntegrityError(KanipyError):
    """Content did not match its digest or declared size."""

    exit_code = 5


class ConfinementError(BuildError):
    """A path from an image or a context tried to leave the root directory."""
