"""Layer blobs go up while later steps run; the manifest still goes last (issue 14).

What a user must see is what they saw before: a build that fails or is stopped
leaves no manifest and no tag anywhere (skopeo cannot inspect it, the tag list
is empty); a build that succeeds gives the image, digest for digest, that a build
pushing everything at the end gives. The blobs a failed build uploaded early are
referenced by nothing and are the registry's garbage collector's to remove.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import requests

from tests.e2e.build_support import tag_exists
from tests.e2e.helpers import build, run_tool, skopeo_manifest, write_tree
from tests.e2e.test_signals import _stop_and_check, _wait_for
from tests.e2e.test_stall_signals import _start
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry
from tests.registry.servers import FaultProxy
from tests.tools import require_tool

# A layer with fixed bytes: with --reproducible its digest is known before a build.
FIRST_STEP = "RUN head -c 3000000 /dev/zero | tr '\\0' k > /early.bin\n"


def _linked_blobs(registry: Registry, repository: str) -> set[str]:
    """The blob digests the registry links into ``repository`` (its storage, read directly)."""
    layers = (registry.directory / "storage/docker/registry/v2/repositories" / repository
              / "_layers/sha256")
    return {f"sha256:{p.name}" for p in layers.iterdir()} if layers.is_dir() else set()


def _tags(registry: Registry, repository: str) -> list[str]:
    resp = requests.get(f"{registry.url}/v2/{repository}/tags/list", timeout=10)
    if resp.status_code == 404:
        return []
    resp.raise_for_status()
    return list(resp.json().get("tags") or [])


def test_a_build_failing_after_layers_went_up_leaves_no_manifest_and_no_tag(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    require_tool("skopeo")
    # The first step's layer digest, from a build that succeeds.
    ok = write_tree(tmp_path / "ok", {"Dockerfile": f"FROM {base_images.oci}\n{FIRST_STEP}"})
    build(ok, "-d", registry.ref("e2e/early-ok:1"), "--reproducible").check()
    layer = skopeo_manifest(registry.ref("e2e/early-ok:1"))["layers"][-1]["digest"]
    # The failing step waits until that layer is in its own repository, so the
    # failure comes after an early upload, whatever the machine's speed.
    blob_url = f"http://{registry.host}/v2/e2e/early-fail/blobs/{layer}"
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        f"{FIRST_STEP}"
        "RUN echo second > /second\n"
        f"RUN i=0; until wget -q -O /dev/null {blob_url}; do i=$((i+1)); "
        "[ $i -ge 300 ] && break; sleep 0.2; done; exit 3\n"
    )})
    dest = registry.ref("e2e/early-fail:latest")
    result = build(context, "-d", dest, "--reproducible")
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "Dockerfile:4" in last and "exit code 3" in last, last
    assert result.stdout == ""
    # The layer did go up before the failure (the case this test is about) ...
    assert layer in _linked_blobs(registry, "e2e/early-fail")
    # ... and nothing anyone can pull did: no manifest, no tag.
    assert not tag_exists(dest)
    assert _tags(registry, "e2e/early-fail") == []
    manifests = (registry.directory / "storage/docker/registry/v2/repositories/e2e/early-fail"
                 / "_manifests")
    assert not manifests.exists() or not any(manifests.rglob("link"))


def test_sigterm_during_an_early_upload_exits_143_and_leaves_nothing(
        tmp_path: Path, fault_proxy: FaultProxy, base_images: BaseImages) -> None:
    proxy = fault_proxy
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        "RUN head -c 2000000 /dev/urandom > /random.bin\n"
        "RUN sleep 300\n"
    )})
    # The registry reads the upload a byte every 10 s: only the signal ends it. The
    # upload can only be the early one: the last step sleeps far past the wait below.
    proxy.inject("PUT", "digest=", "trickle-read", times=100, retry_after=100)
    workdir = tmp_path / "work"
    proc = _start(context, workdir, "-d", f"{proxy.host}/early/stopped:1")
    _wait_for(lambda: any(m == "PUT" and k == "trickle-read" for m, _, k in proxy.injected),
              proc, "the early upload")
    _stop_and_check(proc, 15, 143, "terminated", workdir)
    assert proxy.count("PUT", "/manifests/") == 0
    assert not tag_exists(f"{proxy.upstream.split('://', 1)[1]}/early/stopped:1")


def test_an_early_pushed_image_is_the_image_pushed_at_the_end(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    require_tool("skopeo")
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci} AS tools\n"  # only copied from: none of its blobs go up
        "RUN echo tool > /tool\n"
        f"FROM {base_images.oci} AS parent\n"
        f"{FIRST_STEP}"
        "FROM parent\n"
        "COPY --from=tools /tool /tool\n"
        "RUN echo final > /final\n"
    )})
    dest = registry.ref("e2e/early-same:1")
    pushed = build(context, "-d", dest, "--reproducible").check()
    local = build(context, "--no-push", "--reproducible", "--tar-path",
                  str(tmp_path / "image.tar")).check()
    digest = local.stdout.strip()
    assert pushed.stdout.strip() == f"{registry.host}/e2e/early-same@{digest}"
    # Every blob the manifest names is served (skopeo copy verifies each digest),
    # and the repository holds no blob the image does not name.
    layout = tmp_path / "layout"
    run_tool(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{dest}",
              f"oci:{layout}:image"])
    manifest = skopeo_manifest(dest)
    named = {manifest["config"]["digest"]} | {d["digest"] for d in manifest["layers"]}
    assert _linked_blobs(registry, "e2e/early-same") == named


def test_a_zstd_build_without_reproducible_holds_its_diff_ids(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    require_tool("skopeo")
    require_tool("zstd")
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        "RUN head -c 3000000 /dev/urandom > /random.bin && seq 1 400000 > /numbers\n"
    )})
    dest = registry.ref("e2e/early-zstd:1")
    build(context, "-d", dest, "--compression", "zstd").check()
    layout = tmp_path / "layout"
    run_tool(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{dest}",
              f"oci:{layout}:image"])
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]))
    config = json.loads(_blob(layout, manifest["config"]["digest"]))
    ours = manifest["layers"][-1]
    assert ours["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
    # zstd(1) and GNU tar, not kanipy, read the layer back: its tar is the diff_id.
    path = layout / "blobs/sha256" / ours["digest"].split(":", 1)[1]
    tar = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    assert f"sha256:{hashlib.sha256(tar).hexdigest()}" == config["rootfs"]["diff_ids"][-1]
    numbers = run_tool(["tar", "--zstd", "-xOf", str(path), "numbers"])
    assert numbers.splitlines()[-1] == "400000"


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs/sha256" / digest.split(":", 1)[1]).read_bytes()


def test_every_destination_gets_the_image_and_a_repository_gets_each_blob_once(
        tmp_path: Path, registry: Registry, fault_proxy: FaultProxy,
        base_images: BaseImages) -> None:
    require_tool("skopeo")
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n{FIRST_STEP}RUN echo two > /two\n")})
    # Two tags of one repository through the proxy (which counts uploads), and a
    # repository on another registry host (the registry itself).
    via = [f"{fault_proxy.host}/early/multi:a", f"{fault_proxy.host}/early/multi:b"]
    direct = registry.ref("early/multi-direct:c")
    result = build(context, *[arg for ref in [*via, direct] for arg in ("-d", ref)],
                   "--reproducible").check()
    digests = {line.split("@", 1)[1] for line in result.stdout.splitlines()}
    assert len(result.stdout.splitlines()) == 3 and len(digests) == 1, result.stdout
    for ref in [registry.ref("early/multi:a"), registry.ref("early/multi:b"), direct]:
        assert skopeo_manifest(ref)["layers"], ref
    manifest = skopeo_manifest(direct)
    for desc in [manifest["config"], *manifest["layers"]]:
        hex_digest = desc["digest"].split(":", 1)[1]
        assert fault_proxy.count("PUT", hex_digest) <= 1, desc["digest"]
    assert fault_proxy.count("PUT", "/manifests/") == 2
