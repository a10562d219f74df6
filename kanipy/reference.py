"""Image references: parse, normalize (docker.io, library/) and format.

The grammar is Docker's (github.com/distribution/reference, ``reference.go``
and ``normalize.go``): ``[DOMAIN/]PATH[:TAG][@DIGEST]``. The first path
component is a registry only when it contains ``.`` or ``:`` or is
``localhost``; otherwise the image lives on Docker Hub, and a one-component
Hub name gets the ``library/`` prefix. With both a tag and a digest, the digest
decides what is pulled and the tag is kept only for display.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace

from kanipy.errors import InvalidReferenceError
from kanipy.fieldwise import Fieldwise
from kanipy.oci.digest import Digest

log = logging.getLogger(__name__)

DOCKER_HUB = "docker.io"
# The host that actually serves Docker Hub's distribution API.
DOCKER_HUB_API = "registry-1.docker.io"
# Docker's credential key for Hub in config.json, kept for historical reasons.
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DEFAULT_TAG = "latest"
_MAX_NAME = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
)
_PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_HEX64_RE = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True, repr=False, eq=False)
class Reference(Fieldwise):
    """A parsed, normalized image reference such as ``docker.io/library/busybox:latest``.

    ``tag`` is None only when the reference names a digest alone.
    """

    registry: str
    repository: str
    tag: str | None = DEFAULT_TAG
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse ``text`` as Docker does; raises InvalidReferenceError naming the bad part."""
        return _parse(text)

    @property
    def api_host(self) -> str:
        """The host serving the registry API (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        """``registry/repository``, fully normalized."""
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What goes after ``/manifests/`` in a pull: the digest when there is one."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> Reference:
        if not _TAG_RE.fullmatch(tag):
            raise InvalidReferenceError(f"invalid tag {tag!r}: {_TAG_RULE}")
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: Digest) -> Reference:
        """This image pinned to ``digest``; the tag stays for display."""
        return replace(self, digest=digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


_TAG_RULE = "a tag is up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"


def _fail(text: str, why: str) -> InvalidReferenceError:
    return InvalidReferenceError(f'invalid reference "{text}": {why}')


def _parse(text: str) -> Reference:
    if not text:
        raise InvalidReferenceError("invalid reference: the image name is empty")
    if text != text.strip() or any(c.isspace() for c in text):
        raise _fail(text, "contains whitespace")
    if _HEX64_RE.fullmatch(text):
        # normalize.go refuses these: they look like image ids, not names.
        raise _fail(text, "a 64-character hexadecimal string is an image id, not a name")

    rest, digest = text, None
    if "@" in rest:
        rest, _, digest_text = rest.partition("@")
        try:
            digest = Digest.parse(digest_text)
        except ValueError as exc:
            raise _fail(text, f"bad digest {digest_text!r} ({_reason(exc)})") from None
        if not rest:
            raise _fail(text, "no repository name before '@'")

    tag: str | None = None
    # A ':' after the last '/' starts a tag; one before it belongs to host:port.
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise _fail(text, f"bad tag {tag!r}: {_TAG_RULE}")
    if not rest:
        raise _fail(text, "the repository name is empty")

    registry, path = _split_domain(rest)
    if registry != DOCKER_HUB and not _DOMAIN_RE.fullmatch(registry):
        raise _fail(text, f"bad registry host {registry!r}")
    if not path:
        raise _fail(text, "the repository name is empty")
    if path.lower() != path:
        raise _fail(text, "repository name must be lowercase")
    for component in path.split("/"):
        if not component:
            raise _fail(text, "empty path component in the repository name ('//' or a "
                              "trailing '/')")
        if not _PATH_COMPONENT_RE.fullmatch(component):
            raise _fail(text, f"bad repository path component {component!r}: use lowercase "
                              "letters and digits, separated by '.', '_', '__' or '-'")
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if len(f"{registry}/{path}") > _MAX_NAME:
        raise _fail(text, f"the repository name is longer than {_MAX_NAME} characters")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry=registry, repository=path, tag=tag, digest=digest)


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, remainder = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"):
        return DOCKER_HUB, name
    if first in _HUB_ALIASES:
        return DOCKER_HUB, remainder
    return first, remainder


def _reason(exc: ValueError) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text


def registry_of(text: str) -> str:
    """The normalized registry host of a ``--insecure-registry``-style value."""
    host = text.strip()
    for prefix in ("https://", "http://"):
        if host.startswith(prefix):
            host = host[len(prefix):]
    host = host.split("/", 1)[0]
    return DOCKER_HUB if host in _HUB_ALIASES else host
