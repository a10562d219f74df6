"""Credentials from config.json and helpers, challenge parsing, and small transport rules.

Unit tests: no network, no registry.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from kanipy.errors import AuthError, UsageError
from kanipy.registry.challenge import parse_challenge
from kanipy.registry.credentials import CredentialStore
from kanipy.registry.transport import is_loopback, parse_retry_after, redact_url


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("key", "registry"),
    [
        ("reg.example.com", "reg.example.com"),
        ("https://reg.example.com", "reg.example.com"),
        ("https://reg.example.com/v1/", "reg.example.com"),
        ("http://reg.example.com:5000/", "reg.example.com:5000"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("docker.io", "docker.io"),
    ],
    ids=["bare", "scheme", "scheme-path", "http-port", "hub-legacy-key", "hub-bare"],
)
def test_auths_keys_match_as_docker_matches_them(tmp_path: Path, key: str, registry: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"auths": {key: {"auth": b64("u:p:x")}}}))
    cred = CredentialStore(tmp_path).lookup(registry)
    assert cred is not None
    assert (cred.username, cred.password) == ("u", "p:x")
    assert cred.source == f"{tmp_path / 'config.json'} auths"
    assert CredentialStore(tmp_path).lookup("other.example.com") is None


def test_username_password_and_identity_token_fields(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "a.example.com": {"username": "ua", "password": "Pw-Zq9"},
        "b.example.com": {"identitytoken": "idtok"},
        "c.example.com": {},
    }}))
    creds = CredentialStore(tmp_path)
    a, b = creds.lookup("a.example.com"), creds.lookup("b.example.com")
    assert a is not None and a.basic_auth == ("ua", "Pw-Zq9")
    assert b is not None and b.identity_token == "idtok" and b.basic_auth is None
    assert creds.lookup("c.example.com") is None
    assert "Pw-Zq9" not in repr(a) and "idtok" not in repr(b)


def test_docker_config_env_and_missing_file(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nowhere"))
    store = CredentialStore()
    assert store.config_path == tmp_path / "nowhere" / "config.json"
    assert store.lookup("reg.example.com") is None


def test_broken_config_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UsageError) as info:
        CredentialStore(tmp_path).lookup("reg.example.com")
    assert str(tmp_path / "config.json") in info.value.message


def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_cred_helpers_win_and_get_the_server_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The helper echoes back the server URL it was asked about as the username.
    helper(tmp_path, monkeypatch, "echo",
           'read url; printf \'{"Username":"%s","Secret":"s"}\' "$url"\n')
    (tmp_path / "config.json").write_text(json.dumps({
        "credHelpers": {"reg.example.com": "echo"}, "credsStore": "echo",
        "auths": {"reg.example.com": {"auth": b64("file:pw")}},
    }))
    creds = CredentialStore(tmp_path)
    got = creds.lookup("reg.example.com")
    assert got is not None and got.username == "reg.example.com"
    assert got.source == "docker-credential-echo"
    hub = creds.lookup("docker.io")
    assert hub is not None and hub.username == "https://index.docker.io/v1/"


def test_helper_not_found_answer_and_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper(tmp_path, monkeypatch, "none", "echo 'credentials not found in native keychain'\n"
                                          "exit 1\n")
    helper(tmp_path, monkeypatch, "broken", "echo 'secret-ish output'; exit 3\n")
    helper(tmp_path, monkeypatch, "tok", 'echo \'{"Username":"<token>","Secret":"rt"}\'\n')
    (tmp_path / "config.json").write_text(json.dumps({"credHelpers": {
        "none.example.com": "none", "broken.example.com": "broken",
        "tok.example.com": "tok", "gone.example.com": "missing"}}))
    creds = CredentialStore(tmp_path)
    assert creds.lookup("none.example.com") is None
    with pytest.raises(AuthError) as info:
        creds.lookup("broken.example.com")
    assert "docker-credential-broken failed with exit status 3" in info.value.message
    assert "secret-ish" not in info.value.message
    tok = creds.lookup("tok.example.com")
    assert tok is not None and tok.identity_token == "rt" and not tok.username
    with pytest.raises(AuthError, match="docker-credential-missing .* not on PATH"):
        creds.lookup("gone.example.com")


@pytest.mark.parametrize(
    ("header", "scheme", "params"),
    [
        ('Bearer realm="https://auth.example.com/token",service="reg",'
         'scope="repository:a/b:pull,push"', "bearer",
         {"realm": "https://auth.example.com/token", "service": "reg",
          "scope": "repository:a/b:pull,push"}),
        ('Basic realm="kanipy-test"', "basic", {"realm": "kanipy-test"}),
        ("", None, None),
    ],
    ids=["bearer-with-comma-in-scope", "basic", "absent"],
)
def test_parse_challenge(header: str, scheme: str | None,
                         params: dict[str, str] | None) -> None:
    challenge = parse_challenge(header)
    if scheme is None:
        assert challenge is None
    else:
        assert challenge is not None
        assert (challenge.scheme, challenge.params) == (scheme, params)


def test_transport_helpers() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None
    assert redact_url("https://r/v2/a/blobs/uploads/x?_state=abc&digest=d") == \
        "https://r/v2/a/blobs/uploads/x?_state=<hidden>&digest=d"
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost")
    assert is_loopback("[::1]:5000") and not is_loopback("reg.example.com:5000")


@pytest.mark.parametrize(("config", "want"), [
    ({"credHelpers": 7}, '"credHelpers" must be an object'),
    ({"auths": ["x"]}, '"auths" must be an object'),
    ({"credsStore": {"a": 1}}, '"credsStore" must be the name of a credential helper'),
    ({"auths": {"reg.example.com": "secret"}}, "auths entry for reg.example.com must be"),
    ([1, 2], "is not a JSON object"),
    ({"credHelpers": {"reg.example.com": 7}},
     "credHelpers entry for reg.example.com must be the name of a credential helper"),
    ({"auths": {"reg.example.com": {"identitytoken": 7}}}, "'identitytoken' must be a string"),
    ({"auths": {"reg.example.com": {"username": ["u"], "password": "p"}}},
     "'username' must be a string"),
], ids=["credHelpers-number", "auths-list", "credsStore-object", "auths-entry-string",
        "top-list", "credHelpers-helper-number", "identitytoken-number", "username-list"])
def test_malformed_config_is_a_usage_error_naming_the_file(
        tmp_path: Path, config: object, want: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match=want) as caught:
        CredentialStore(tmp_path).lookup("reg.example.com")
    assert str(tmp_path / "config.json") in caught.value.message
    assert "fix or remove it" in caught.value.message
