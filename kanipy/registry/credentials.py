"""Registry credentials from Docker's config.json and credential helpers.

Where Docker looks (docker/cli ``cli/config``): ``$DOCKER_CONFIG/config.json``,
else ``~/.docker/config.json``. Per registry, ``credHelpers`` wins, then
``credsStore``, then the ``auths`` entry (``auth`` = base64 ``user:pass``, or
``username``/``password``, and ``identitytoken``). Helpers speak the
docker-credential-helpers protocol: ``docker-credential-NAME get`` reads the
server URL on stdin and prints ``{"Username": ..., "Secret": ...}``; the
username ``<token>`` marks the secret as an identity (refresh) token. Docker Hub
is stored under ``https://index.docker.io/v1/``.

Every Credential remembers where it came from, so an error can say which one a
registry rejected. Secrets never appear in ``repr`` or in logs.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kanipy.errors import AuthError, UsageError
from kanipy.fieldwise import Fieldwise
from kanipy.reference import DOCKER_HUB, DOCKER_HUB_CONFIG_KEY, registry_of

log = logging.getLogger(__name__)

IDENTITY_TOKEN_USER = "<token>"
_HELPER_TIMEOUT = 60


@dataclass(frozen=True, repr=False, eq=False)
class Credential(Fieldwise):
    """A username and secret for one registry, and where they were found."""

    username: str = field(repr=False, default="")
    password: str = field(repr=False, default="")
    identity_token: str = field(repr=False, default="")
    source: str = ""

    def __repr__(self) -> str:
        return f"Credential(username=<hidden>, password=<hidden>, source={self.source!r})"

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        if self.username or self.password:
            return (self.username, self.password)
        return None


def default_config_dir() -> Path:
    env = os.environ.get("DOCKER_CONFIG")
    if env:
        return Path(env)
    return Path.home() / ".docker"


def config_key(registry: str) -> str:
    """The server URL Docker stores ``registry``'s credentials under."""
    return DOCKER_HUB_CONFIG_KEY if registry == DOCKER_HUB else registry


class CredentialStore:
    """Looks up credentials per registry host; reads config.json once, helpers per call."""

    def __init__(self, config_dir: str | os.PathLike[str] | None = None) -> None:
        self.config_dir = Path(config_dir) if config_dir is not None else default_config_dir()
        self.config_path = self.config_dir / "config.json"
        self._config: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._config is None:
            try:
                text = self.config_path.read_text()
            except FileNotFoundError:
                log.debug("no Docker config at %s", self.config_path)
                self._config = {}
                return self._config
            except OSError as exc:
                raise UsageError(f"cannot read {self.config_path}: {exc.strerror}") from None
            try:
                data = json.loads(text) if text.strip() else {}
            except json.JSONDecodeError as exc:
                raise UsageError(
                    f"{self.config_path} is not valid JSON (line {exc.lineno}): fix or remove it"
                ) from None
            if not isinstance(data, dict):
                raise UsageError(f"{self.config_path} is not a JSON object: fix or remove it")
            for key in ("credHelpers", "auths"):
                if not isinstance(data.get(key) or {}, dict):
                    raise UsageError(
                        f"{self.config_path}: \"{key}\" must be an object mapping registry "
                        f"hosts to {'helper names' if key == 'credHelpers' else 'entries'}; "
                        "fix or remove it")
            if not isinstance(data.get("credsStore") or "", str):
                raise UsageError(f"{self.config_path}: \"credsStore\" must be the name of a "
                                 "credential helper (a string); fix or remove it")
            self._config = data
        return self._config

    def lookup(self, registry: str) -> Credential | None:
        """Credentials for ``registry`` (a normalized host such as ``docker.io``), or None."""
        config = self._load()
        helpers = config.get("credHelpers") or {}
        helper = _match(helpers, registry)
        if helper is not None and not isinstance(helper, str):
            raise UsageError(f"{self.config_path}: credHelpers entry for {registry} must be "
                             "the name of a credential helper (a string); fix or remove it")
        if helper:
            return run_helper(helper, config_key(registry))
        store = config.get("credsStore")
        if store:
            found = run_helper(str(store), config_key(registry))
            if found is not None:
                return found
        entry = _match(config.get("auths") or {}, registry)
        if entry is not None and not isinstance(entry, dict):
            raise UsageError(f"{self.config_path}: auths entry for {registry} must be an "
                             "object; fix or remove it")
        if isinstance(entry, dict):
            return _from_auths_entry(entry, f"{self.config_path} auths")
        return None


def _match(table: dict[str, Any], registry: str) -> Any:
    """The value for ``registry`` in a config.json map, keys compared as Docker does.

    Docker normalises keys with ``ConvertToHostname``: scheme and path dropped,
    so ``https://reg.example.com/v1/`` and ``reg.example.com`` are one key.
    """
    if registry in table:
        return table[registry]
    if registry == DOCKER_HUB and DOCKER_HUB_CONFIG_KEY in table:
        return table[DOCKER_HUB_CONFIG_KEY]
    for key, value in table.items():
        if registry_of(key) == registry:
            return value
    return None


def _from_auths_entry(entry: dict[str, Any], source: str) -> Credential | None:
    for name in ("username", "password", "auth", "identitytoken"):
        if not isinstance(entry.get(name) or "", str):
            raise UsageError(f"{source}: '{name}' must be a string; fix or remove it")
    username = str(entry.get("username") or "")
    password = str(entry.get("password") or "")
    encoded = entry.get("auth")
    if encoded:
        try:
            decoded = base64.b64decode(str(encoded), validate=False).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise UsageError(f"{source}: the 'auth' value is not base64 of user:password") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise UsageError(f"{source}: the 'auth' value does not decode to user:password")
    token = str(entry.get("identitytoken") or "")
    if not (username or password or token):
        return None
    return Credential(username, password, token, source)


def run_helper(name: str, server_url: str) -> Credential | None:
    """Ask ``docker-credential-NAME`` for ``server_url``; None when it has nothing."""
    program = f"docker-credential-{name}"
    source = program
    try:
        proc = subprocess.run(
            [program, "get"], input=server_url.encode(), capture_output=True,
            timeout=_HELPER_TIMEOUT, check=False,
        )
    except FileNotFoundError:
        raise AuthError(
            f"credential helper {program} is configured for {server_url} but is not on PATH"
        ) from None
    except subprocess.TimeoutExpired:
        raise AuthError(f"credential helper {program} did not answer within "
                        f"{_HELPER_TIMEOUT}s") from None
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        # The protocol's "not found" answer is the text below on stdout.
        if "credentials not found" in out.lower():
            log.debug("%s has no credentials for %s", program, server_url)
            return None
        # The helper's output is not echoed: some helpers print secrets in errors.
        raise AuthError(f"credential helper {program} failed with exit status "
                        f"{proc.returncode} for {server_url}")
    try:
        data = json.loads(out)
        username = str(data.get("Username") or "")
        secret = str(data.get("Secret") or "")
    except (json.JSONDecodeError, AttributeError):
        raise AuthError(f"credential helper {program} printed something that is not "
                        "the expected JSON") from None
    if not (username or secret):
        return None
    if username == IDENTITY_TOKEN_USER:
        return Credential(identity_token=secret, source=source)
    return Credential(username, secret, "", source)
