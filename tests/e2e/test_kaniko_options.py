"""Kaniko's options that change what a build writes or how it pushes, through the real CLI.

Each test runs ``kanipy build`` as a child process against the registry
fixture (through the fault-injecting proxy where the registry must misbehave)
and checks what a user would notice: the manifest skopeo reads, the files
written, the exit code and the message.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import BuildRun, build, run_tool, skopeo_manifest, unpack_image, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import CertificateAuthority, Registry
from tests.registry.servers import FaultProxy
from tests.tools import require_tool


@pytest.fixture
def proxy(fault_proxy: FaultProxy) -> FaultProxy:
    """The shared per-test fault proxy (tests/conftest.py) under this module's name."""
    return fault_proxy


def _copy_context(tmp_path: Path, base: str) -> Path:
    return write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM {base}\nCOPY app.txt /app.txt\n",
        "app.txt": "app\n",
    })


def _registry_digest(ref: str) -> str:
    require_tool("skopeo")
    return str(json.loads(run_tool(["skopeo", "inspect", "--tls-verify=false",
                                    f"docker://{ref}"]))["Digest"])


@pytest.mark.parametrize("image_format", ["oci", "docker"])
def test_annotations_are_on_the_pushed_manifest_and_in_its_digest(
        tmp_path: Path, registry: Registry, base_images: BaseImages, image_format: str) -> None:
    # A Docker schema 2 manifest carries them too, as go-containerregistry's
    # mutate.Annotations (Kaniko's fork) writes them.
    dest = registry.ref(f"opts/annotated-{image_format}:1")
    result = build(_copy_context(tmp_path, getattr(base_images, image_format)),
                   "--annotation", "org.opencontainers.image.source=https://example.com/app",
                   "--annotation=com.example.empty=", "-d", dest).check()

    require_tool("skopeo")
    raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                          f"docker://{dest}"], check=True, capture_output=True).stdout
    assert json.loads(raw)["annotations"] == {
        "com.example.empty": "",
        "org.opencontainers.image.source": "https://example.com/app",
    }
    # The digest kanipy printed is over the bytes the registry holds.
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    assert result.stdout.strip() == f"{registry.host}/opts/annotated-{image_format}@{digest}"
    media_type = json.loads(raw)["mediaType"]
    assert ("docker" in media_type) is (image_format == "docker")


def test_no_annotations_means_no_annotations_field(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    dest = registry.ref("opts/plain:1")
    build(_copy_context(tmp_path, base_images.oci), "-d", dest).check()
    assert "annotations" not in skopeo_manifest(dest)


def test_skip_push_permission_check_opens_no_upload_before_the_build(
        tmp_path: Path, registry: Registry, base_images: BaseImages, proxy: FaultProxy) -> None:
    # FROM scratch: every request the proxy sees is the check or the push.
    context = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nCOPY a /a\n",
                                            "a": "a\n"})
    dest = f"{proxy.host}/opts/skip-check:1"
    build(context, "-d", dest).check()
    # The check opens an upload and cancels it; a push never cancels one.
    assert proxy.count("DELETE", "/blobs/uploads/") == 1

    build(context, "--skip-push-permission-check", "-d", dest).check()
    assert proxy.count("DELETE", "/blobs/uploads/") == 1, "no second check"

    # Refused before the build without the flag; with it, the build runs and the
    # push itself is refused (the user asked for no early check).
    proxy.inject_error("POST", "/blobs/uploads/", 403, "DENIED", "requested access to the "
                       "resource is denied", times=1)
    failed = build(write_tree(tmp_path / "ctx2", {
        "Dockerfile": "FROM scratch\nCOPY b /b\n", "b": "b\n"}), "-d", dest)
    assert failed.returncode == 4
    assert "STEP 2/2" not in failed.stderr, "the check comes before any step"
    assert f"push to {proxy.host}/opts/skip-check denied" in failed.stderr


IMMUTABLE = ("The image tag 'v1' already exists in the 'opts/immutable' repository and "
             "cannot be overwritten because the repository is immutable.")


def test_an_immutable_tag_refusal_fails_the_push_by_default(
        tmp_path: Path, registry: Registry, base_images: BaseImages, proxy: FaultProxy) -> None:
    proxy.inject_error("PUT", "/manifests/", 400, "TAG_INVALID", IMMUTABLE)
    dest = f"{proxy.host}/opts/immutable:v1"
    result = build(_copy_context(tmp_path, base_images.oci.replace(registry.host, proxy.host)),
                   "-d", dest)
    assert result.returncode == 4, result.stderr
    assert "TAG_INVALID" in result.stderr and "immutable" in result.stderr
    assert result.stdout == ""


def test_push_ignore_immutable_tag_errors_counts_the_refusal_as_success(
        tmp_path: Path, registry: Registry, base_images: BaseImages, proxy: FaultProxy) -> None:
    proxy.inject_error("PUT", "/manifests/v1", 400, "TAG_INVALID", IMMUTABLE)
    immutable = f"{proxy.host}/opts/immutable:v1"
    other = f"{proxy.host}/opts/immutable:v2"
    out = tmp_path / "out"
    result = build(_copy_context(tmp_path, base_images.oci.replace(registry.host, proxy.host)),
                   "--push-ignore-immutable-tag-errors", "-d", immutable, "-d", other,
                   "--digest-file", str(out / "digest"))
    assert result.returncode == 0, result.stderr
    assert "WARNING" in result.stderr and "immutable" in result.stderr
    digest = (out / "digest").read_text()
    # v1 kept the registry's image; v2 was pushed and is the only name@digest line.
    assert result.stdout.splitlines() == [f"{proxy.host}/opts/immutable@{digest}"]
    assert _registry_digest(registry.ref("opts/immutable:v2")) == digest
    assert ("PUT", "/v2/opts/immutable/manifests/v1") in proxy.requests


@pytest.mark.parametrize("kind", ["other error", "plain 400"])
def test_push_ignore_immutable_tag_errors_leaves_other_refusals_failures(
        tmp_path: Path, registry: Registry, base_images: BaseImages, proxy: FaultProxy,
        kind: str) -> None:
    message = "manifest invalid" if kind == "plain 400" else "tag is protected by policy"
    proxy.inject_error("PUT", "/manifests/", 400, "MANIFEST_INVALID", message)
    result = build(_copy_context(tmp_path, base_images.oci.replace(registry.host, proxy.host)),
                   "--push-ignore-immutable-tag-errors", "-d", f"{proxy.host}/opts/other:1")
    assert result.returncode == 4
    assert "MANIFEST_INVALID" in result.stderr


def test_builder_output_lists_every_destination_after_the_push(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    first = registry.ref("opts/builder-output:1")
    second = registry.ref("opts/builder-output")  # as given: no tag added
    out = tmp_path / "builder-output"
    out.mkdir()
    build(_copy_context(tmp_path, base_images.oci), "-d", first, "-d", second,
          env={"BUILDER_OUTPUT": str(out)}).check()
    digest = _registry_digest(first)
    # Kaniko's format (pkg/executor/push.go): Go's json.Encoder, one object a line.
    assert (out / "images").read_text() == (
        f'{{"name":"{first}","digest":"{digest}"}}\n'
        f'{{"name":"{second}","digest":"{digest}"}}\n')


def test_builder_output_is_not_written_without_a_push(
        tmp_path: Path, base_images: BaseImages) -> None:
    out = tmp_path / "builder-output"
    out.mkdir()
    build(_copy_context(tmp_path, base_images.oci), "--no-push",
          env={"BUILDER_OUTPUT": str(out)}).check()
    assert not (out / "images").exists()


def test_ignore_path_leaves_the_path_out_of_every_layer(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": (f"FROM {base_images.oci}\n"
                       "RUN mkdir -p /ignored/deep /kept && echo x > /ignored/deep/x "
                       "&& echo y > /kept/y && echo z > /var/cache-z\n"
                       "COPY app.txt /ignored/copied.txt\n"
                       "COPY app.txt /kept/copied.txt\n"
                       # The step still sees what an earlier step wrote there.
                       "RUN cat /ignored/deep/x /ignored/copied.txt > /kept/seen\n"),
        "app.txt": "app\n",
    })
    dest = registry.ref("opts/ignore-path:1")
    build(context, "--ignore-path=/ignored", "--ignore-path", "/var/cache-z",
          "-d", dest).check()

    rootfs = unpack_image(dest, tmp_path / "unpacked")
    assert (rootfs / "kept/y").read_text() == "y\n"
    assert (rootfs / "kept/copied.txt").read_text() == "app\n"
    assert (rootfs / "kept/seen").read_text() == "x\napp\n"
    assert not (rootfs / "ignored").exists()
    assert not (rootfs / "var/cache-z").exists()
    # Not even an empty layer for the COPY into the ignored directory.
    assert len(skopeo_manifest(dest)["layers"]) == 1 + 3


# -- where base images come from --------------------------------------------------------

def _dead_host() -> str:
    from tests.fixtures.registry import HOST, free_port

    return f"{HOST}:{free_port()}"


def _from_context(tmp_path: Path, base: str) -> Path:
    return write_tree(tmp_path / "ctx", {"Dockerfile": f"FROM {base}\nRUN test -x /bin/sh\n"})


def test_registry_map_pulls_from_each_mapped_registry_in_order(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    repository_and_tag = base_images.oci.split("/", 1)[1]
    # The mapped registry keeps the image under a prefix (Kaniko: NEW is host[/prefix]).
    run_tool(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
              f"docker://{base_images.oci}",
              f"docker://{registry.host}/mapped-prefix/{repository_and_tag}"])
    dead = _dead_host()
    # orig.invalid does not resolve: only the mapped registries can serve the image.
    result = build(_from_context(tmp_path, f"orig.invalid/{repository_and_tag}"),
                   "--push-retry=0", "--no-push",
                   f"--registry-map=orig.invalid={dead}",
                   "--registry-map", f"orig.invalid={registry.host}/mapped-prefix")
    assert result.returncode == 0, result.stderr
    assert f"mirror {dead}/{repository_and_tag.split(':')[0]} could not serve" in result.stderr


def test_a_registry_map_falls_back_to_the_original_registry(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    dead = _dead_host()
    result = build(_from_context(tmp_path, base_images.oci), "--push-retry=0", "--no-push",
                   f"--registry-map={registry.host}={dead}")
    assert result.returncode == 0, result.stderr
    assert f"mirror {dead}/" in result.stderr


def test_skip_default_registry_fallback_fails_naming_the_mirrors_tried(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    dead = _dead_host()
    repository = base_images.oci.split("/", 1)[1].split(":")[0]
    result = build(_from_context(tmp_path, base_images.oci), "--push-retry=0", "--no-push",
                   "--skip-default-registry-fallback",
                   "--registry-map", f"{registry.host}={dead}")
    assert result.returncode == 4, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kanipy: error: ")
    assert f"tried {dead}/{repository}" in last
    assert "--skip-default-registry-fallback" in last and registry.host in last
    assert "STEP 2/2" not in result.stderr


def test_skip_default_registry_fallback_without_maps_changes_nothing(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    build(_from_context(tmp_path, base_images.oci), "--no-push",
          "--skip-default-registry-fallback").check()


def test_image_download_retry_counts_pull_retries_apart_from_push_retry(
        tmp_path: Path, registry: Registry, base_images: BaseImages, proxy: FaultProxy) -> None:
    context = _from_context(tmp_path, base_images.oci.replace(registry.host, proxy.host))
    proxy.inject("GET", "/manifests/", "503", times=2)
    build(context, "--no-push", "--push-retry=0", "--image-download-retry=2").check()

    proxy.inject("GET", "/manifests/", "503", times=2)
    failed = build(context, "--no-push", "--push-retry=5", "--image-download-retry=1")
    assert failed.returncode == 4, failed.stderr
    assert "HTTP 503" in failed.stderr
    # 3 GETs for the first pull (2 refused), 2 for the second (1 + 1 retry).
    assert proxy.count("GET", "/manifests/") == 3 + 2


# -- mutual TLS -------------------------------------------------------------------------

def test_registry_client_cert_gives_mutual_tls(
        tmp_path: Path, mtls_registry: Registry, test_ca: CertificateAuthority) -> None:
    cert, key = test_ca.client_certificate("kanipy-client")
    context = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nCOPY a /a\n",
                                            "a": "a\n"})
    dest = mtls_registry.ref("opts/mtls:1")
    trust = f"--registry-certificate={mtls_registry.host}={test_ca.ca_cert}"

    refused = build(context, trust, "-d", dest)
    assert refused.returncode == 4, refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert "client certificate" in last and "--registry-client-cert" in last, last

    # A certificate from a CA the registry does not trust is refused as well.
    stranger = CertificateAuthority(tmp_path / "stranger-ca").client_certificate("stranger")
    refused = build(context, trust,
                    f"--registry-client-cert={mtls_registry.host}={stranger[0]},{stranger[1]}",
                    "-d", dest)
    assert refused.returncode == 4, refused.stderr
    assert "--registry-client-cert" in refused.stderr.strip().splitlines()[-1]

    result = build(context, trust,
                   f"--registry-client-cert={mtls_registry.host}={cert},{key}", "-d", dest)
    assert result.returncode == 0, result.stderr

    # skopeo, given the same certificate, finds the pushed image.
    certs = tmp_path / "certs.d"
    certs.mkdir()
    (certs / "client.cert").write_bytes(cert.read_bytes())
    (certs / "client.key").write_bytes(key.read_bytes())
    (certs / "ca.crt").write_bytes(test_ca.ca_cert.read_bytes())
    inspected = json.loads(run_tool(["skopeo", "inspect", "--cert-dir", str(certs),
                                     f"docker://{dest}"]))
    assert result.stdout.strip() == f"{mtls_registry.host}/opts/mtls@{inspected['Digest']}"


# -- TLS switches, scoped as Kaniko scopes them -------------------------------------------

def test_tls_verification_switches_are_scoped_to_pulls_or_pushes(
        tmp_path: Path, auth_registry: Registry, base_images: BaseImages) -> None:
    from tests.conftest import AUTH_PASSWORD, AUTH_USER
    from tests.e2e.test_build_auth import _docker_config

    base = auth_registry.ref("opts/tls-base:oci")
    run_tool(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
              "--dest-creds", f"{AUTH_USER}:{AUTH_PASSWORD}", f"docker://{base_images.oci}",
              f"docker://{base}"])
    env = {"DOCKER_CONFIG": str(_docker_config(tmp_path / "docker", auth_registry.host,
                                               AUTH_USER, AUTH_PASSWORD))}
    context = _copy_context(tmp_path, base)
    dest = auth_registry.ref("opts/tls:1")

    def untrusted(result: BuildRun) -> bool:
        return result.returncode == 4 and "TLS certificate is not trusted" in result.stderr

    assert untrusted(build(context, "--no-push", env=env)), "verified by default"
    # --skip-tls-verify-pull: the pull works; the push (its early check) still verifies.
    build(context, "--no-push", "--skip-tls-verify-pull", env=env).check()
    refused = build(context, "--skip-tls-verify-pull", "-d", dest, env=env)
    assert untrusted(refused), refused.stderr
    assert "push to" in refused.stderr.strip().splitlines()[-1]
    # --skip-tls-verify: pushes only; the pull of the base still verifies (issue 12).
    refused = build(context, "--skip-tls-verify", "-d", dest, env=env)
    assert untrusted(refused), refused.stderr
    assert "push to" not in refused.stderr.strip().splitlines()[-1]
    build(context, "--skip-tls-verify", "--skip-tls-verify-pull", "-d", dest, env=env).check()
    # --skip-tls-verify-registry: both, for that registry only.
    build(context, f"--skip-tls-verify-registry={auth_registry.host}", "-d", dest,
          env=env).check()
