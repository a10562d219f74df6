"""The real parts other tests stand on behave as the tests assume."""

from __future__ import annotations

import json
import subprocess

import requests

from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry


def _skopeo_inspect(ref: str, *extra: str) -> dict:
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", *extra, f"docker://{ref}"],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)


def test_base_image_forms(base_images: BaseImages) -> None:
    oci = _skopeo_inspect(base_images.oci, "--raw")
    docker = _skopeo_inspect(base_images.docker, "--raw")
    multi = _skopeo_inspect(base_images.multi, "--raw")
    assert oci["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert docker["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert multi["mediaType"] == "application/vnd.oci.image.index.v1+json"
    platforms = {(m["platform"]["architecture"], m["platform"].get("variant"))
                 for m in multi["manifests"]}
    assert platforms == {("amd64", None), ("arm64", "v8")}


def test_auth_registry_refuses_anonymous_and_accepts_password(auth_registry: Registry) -> None:
    ca = str(auth_registry.tls.ca_cert) if auth_registry.tls else True
    assert requests.get(f"{auth_registry.url}/v2/", verify=ca, timeout=5).status_code == 401
    ok = requests.get(f"{auth_registry.url}/v2/", verify=ca, timeout=5,
                      auth=(AUTH_USER, AUTH_PASSWORD))
    assert ok.status_code == 200
