"""HTTP for every caller: one Session factory, one URL redactor, one verified download.

``make_session`` is the only place a ``requests.Session`` is made: the
registry client, remote contexts and ``ADD <url>`` all get kanipy's
User-Agent, connection pools and, when asked, urllib3 retries for idempotent
requests only (GET, HEAD: connection errors, 429 and 5xx, honouring
``Retry-After``). The registry asks for none: its own loop retries, and
uploads restart from their file.

``redact_url`` is what every message and log line shows of a URL: user-info
(``user:password@``, ``token@``) is shown as ``<hidden>``, and so is the value
of each query parameter whose name suggests a secret (registry upload
``_state``, S3/GCS/Azure signatures, ``access_token``). ``redact_urls_in``
does the same to every URL inside a text (a git error, an exception).

``download_to_file`` streams a GET into a file, hashing as it writes (memory
does not grow with the body), and checks the digest when one is expected.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_plus

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from kanipy import __version__
from kanipy.errors import BuildError, KanipyError
from kanipy.oci.digest import Digest, HashingWriter

log = logging.getLogger(__name__)

USER_AGENT = f"kanipy/{__version__}"
HIDDEN = "<hidden>"
# (connect, read) seconds for downloads; the registry has its own (RegistryOptions).
DOWNLOAD_TIMEOUT = (15.0, 60.0)
DOWNLOAD_RETRIES = 3
_CHUNK = 1 << 20
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# Query parameter names (lower-cased) whose values are secrets or grant access:
# tokens, signatures (X-Amz-Signature, X-Goog-Signature, Azure's sig), keys,
# credentials, the registry's upload _state, OAuth codes.
_SECRET_PARAM = re.compile(
    r"token|sig|secret|pass|pwd|key|auth|cred|session|state|code|policy|access|"
    r"^x-amz-|^x-goog-")
_URL_PARTS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)(.*)\Z", re.DOTALL)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")


def make_session(
    *,
    user_agent: str = USER_AGENT,
    retries: int = 0,
    backoff: float = 0.5,
    pool_maxsize: int = 8,
    verify: bool | str = True,
    trust_env: bool = True,
) -> requests.Session:
    """A Session with kanipy's User-Agent and pools; ``retries`` > 0 retries GET and
    HEAD only. ``verify`` is False or a CA bundle for TLS (per-request ``verify``
    wins); ``trust_env=False`` ignores proxies, CA bundles and ``.netrc`` from the
    environment (the registry client's credentials come only from config.json)."""
    session = requests.Session()
    session.headers["User-Agent"] = user_agent
    session.verify = verify
    session.trust_env = trust_env
    max_retries: Retry | int = 0
    if retries > 0:
        max_retries = Retry(
            total=retries, backoff_factor=backoff, status_forcelist=_RETRY_STATUS,
            allowed_methods=frozenset({"GET", "HEAD"}), respect_retry_after_header=True,
            raise_on_status=False)
    adapter = HTTPAdapter(pool_connections=8, pool_maxsize=max(8, pool_maxsize),
                          max_retries=max_retries)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def redact_url(url: str) -> str:
    """``url`` with its user-info and secret query values shown as ``<hidden>``.

    Everything else is kept byte for byte; anything that is not a
    ``scheme://`` URL (a path, ``git@host:repo``) is returned as it is.
    """
    match = _URL_PARTS.match(url)
    if match is None:
        return url
    scheme, authority, rest = match.groups()
    if "@" in authority:
        authority = f"{HIDDEN}@{authority.rpartition('@')[2]}"
    before_fragment, hash_mark, fragment = rest.partition("#")
    path, question_mark, query = before_fragment.partition("?")
    if query:
        query = "&".join(_redact_param(param) for param in query.split("&"))
    return f"{scheme}{authority}{path}{question_mark}{query}{hash_mark}{fragment}"


def _redact_param(param: str) -> str:
    name, equals, _ = param.partition("=")
    if equals and _SECRET_PARAM.search(unquote_plus(name).lower()):
        return f"{name}={HIDDEN}"
    return param


def redact_urls_in(text: str) -> str:
    """``text`` with every ``scheme://`` URL in it passed through ``redact_url``."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


@dataclass(frozen=True)
class Download:
    """A body saved to ``path`` (the caller removes it), its digest and size, and the
    response's ``Last-Modified`` header, if any."""

    path: Path
    digest: Digest
    size: int
    last_modified: str | None


def download_to_file(
    url: str,
    directory: Path,
    *,
    what: str,
    error: type[KanipyError] = BuildError,
    expected: Digest | None = None,
    session: requests.Session | None = None,
    timeout: tuple[float, float] = DOWNLOAD_TIMEOUT,
) -> Download:
    """GET ``url`` into a new file in ``directory``, streamed and hashed as it comes.

    Redirects are followed. Anything but 200, a broken connection, or a digest
    other than ``expected`` raises ``error`` with a message starting with
    ``what``; the partial file is removed.
    """
    own_session = session is None
    if session is None:
        session = make_session(retries=DOWNLOAD_RETRIES)
    log.debug("downloading %s", redact_url(url))
    fd, name = tempfile.mkstemp(prefix="download-", dir=directory)
    target = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = session.get(url, stream=True, timeout=timeout)
            except requests.RequestException as exc:
                raise error(f"{what}: cannot download it: {_reason(exc)}") from None
            with response:
                if response.status_code != 200:
                    raise error(f"{what}: the server answered {response.status_code} "
                                f"{response.reason}")
                hasher = HashingWriter(
                    out, expected.algorithm if expected else "sha256")  # type: ignore[arg-type]
                try:
                    for chunk in response.iter_content(_CHUNK):
                        hasher.write(chunk)
                except requests.RequestException as exc:
                    raise error(f"{what}: the download broke off: {_reason(exc)}") from None
                last_modified = response.headers.get("Last-Modified")
        if expected is not None and hasher.digest != expected:
            raise error(f"{what}: checksum mismatch: expected {expected}, got "
                        f"{hasher.digest}; the download was discarded and nothing was written")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    finally:
        if own_session:
            session.close()
    return Download(target, hasher.digest, hasher.size, last_modified)


def _reason(exc: BaseException) -> str:
    """Why a request failed, in words, without credentials or tokens."""
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if "name or service not known" in lowered or "failed to resolve" in lowered \
            or "temporary failure in name resolution" in lowered:
        return "the host name does not resolve (DNS)"
    if "connection refused" in lowered:
        return "connection refused"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS failed ({redact_urls_in(text)[:300]})"
    return f"{type(exc).__name__}: {redact_urls_in(text)[:300]}"
