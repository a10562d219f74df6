"""The layer cache (issue 10): hits, misses and their explanations, on real registries.

Each test shares a few builds of one small Dockerfile and checks what a user
would see: which steps say ``cached``, the one-line reason of each miss, the
rebuilt image's layer digests (read by skopeo) and the cache entries (read by
skopeo or umoci). Problems with the cache are warnings, never failures.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.e2e.helpers import (
    REPO,
    build,
    cached_steps,
    run_tool,
    skopeo_config,
    skopeo_manifest,
    step_records,
    unpack_image,
    write_tree,
)
from tests.e2e.test_build_auth import _docker_config
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry
from tests.registry.servers import FaultProxy
from tests.tools import require_tool

DOCKERFILE = """\
ARG BASE
FROM $BASE
ARG DEST=/srv
ARG VERSION=1
WORKDIR /work
COPY req.txt $DEST/
RUN echo "v$VERSION" > /version && cat $DEST/req.txt > /req.copy
COPY app/ /app/
RUN --mount=type=secret,id=token test -s /run/secrets/token && ls /app > /app.list
"""
SECRET = "Tok3n-never-cached-5Qx"


def _context(root: Path) -> Path:
    return write_tree(root, {
        "Dockerfile": DOCKERFILE,
        ".dockerignore": "ignored.txt\n",
        "req.txt": "flask==3.0\n",
        "ignored.txt": "not in the context\n",
        "app/a.txt": "alpha\n",
        "app/sub/b.txt": "beta\n",
    })


def _kanipy(context: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = build(context, "--cache", "--cache-copy-layers", "--log-format", "json",
                   "--secret", "id=token,env=TOKEN", "--build-arg", f"BASE={_base(args)}",
                   *[a for a in args if not a.startswith("BASE=")],
                   env={"TOKEN": SECRET, **(env or {})}).check()
    return result.stderr


def _base(args: tuple[str, ...]) -> str:
    return next(a.removeprefix("BASE=") for a in args if a.startswith("BASE="))


def _miss_reasons(stderr: str) -> list[str]:
    return [f"{k} — {v}" for k, v in step_records(stderr).get("misses", {}).items()]


def _layers(ref: str) -> list[str]:
    return [layer["digest"] for layer in skopeo_manifest(ref)["layers"]]


def test_registry_cache_hits_misses_and_says_why(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    context = _context(tmp_path / "ctx")
    dest = registry.ref("cache/app:1")
    base = f"BASE={base_images.oci}"
    cold = _kanipy(context, "-d", dest, base)
    assert not any(cached_steps(cold).values()), cached_steps(cold)
    first_layers = _layers(dest)

    # Unchanged but for mtimes and an ignored file: every step is a hit, and the
    # image's layers are the very same blobs.
    for path in context.rglob("*"):
        os.utime(path, (1, 1))
    (context / "ignored.txt").write_text("changed, but ignored\n")
    warm = _kanipy(context, "-d", dest, base)
    assert all(cached_steps(warm).values()), cached_steps(warm)
    assert _layers(dest) == first_layers
    # Entries are images in <destination>/cache, tagged by key, readable by skopeo.
    tags = json.loads(run_tool(["skopeo", "list-tags", "--tls-verify=false",
                                f"docker://{registry.ref('cache/app/cache')}"]))["Tags"]
    assert len([t for t in tags if not t.startswith("step-")]) == 5, tags

    # A one-byte edit: that COPY and the steps after it miss, and say why.
    (context / "app/sub/b.txt").write_text("betA\n")
    edited = _kanipy(context, "-d", dest, base)
    cached = cached_steps(edited)
    assert [k for k, v in cached.items() if not v] == \
        ["COPY app/ /app/", "RUN --mount=type=secret,id"], cached
    reasons = _miss_reasons(edited)
    assert any("COPY app/ /app/ — app/sub/b.txt changed" in r for r in reasons), reasons
    assert any("RUN --mount" in r and "earlier step changed" in r for r in reasons), reasons

    # A mode change alone misses too.
    (context / "app/a.txt").chmod(0o600)
    moded = _kanipy(context, "-d", dest, base)
    assert any("app/a.txt changed" in r for r in _miss_reasons(moded)), _miss_reasons(moded)

    # An ARG used by a RUN, and an ARG used only in a COPY destination. A value
    # from the Dockerfile is shown; one given by --build-arg is not (issue 12).
    (context / "Dockerfile").write_text(DOCKERFILE.replace("VERSION=1", "VERSION=3"))
    version = _kanipy(context, "-d", dest, base)
    assert any("RUN echo" in r and "ARG VERSION changed (1 → 3)" in r
               for r in _miss_reasons(version)), _miss_reasons(version)
    assert cached_steps(version)["COPY req.txt $DEST/"], cached_steps(version)  # as written
    (context / "Dockerfile").write_text(DOCKERFILE)
    given = _kanipy(context, "-d", dest, base, "--build-arg", "VERSION=2")
    assert any("RUN echo" in r and "ARG VERSION changed (value given by --build-arg)" in r
               for r in _miss_reasons(given)), _miss_reasons(given)
    moved = _kanipy(context, "-d", dest, base, "--build-arg", "DEST=/opt")
    assert any("COPY req.txt $DEST/" in r and
               "ARG DEST changed (value given by --build-arg)" in r
               for r in _miss_reasons(moved)), _miss_reasons(moved)
    assert "/opt" not in "".join(_miss_reasons(moved))

    # A new base digest: the first step that makes a layer says so.
    rebased = _kanipy(context, "-d", dest, f"BASE={base_images.docker}")
    assert any("base image changed" in r for r in _miss_reasons(rebased)), \
        _miss_reasons(rebased)


def _layout_layers(path: Path) -> list[str]:
    inspect = json.loads(run_tool(["skopeo", "inspect", f"oci:{path}"]))
    return list(inspect["Layers"])


def _blob_texts(layout: Path) -> list[bytes]:
    """Every blob of an OCI layout, layers decompressed."""
    out = []
    for blob in (layout / "blobs" / "sha256").iterdir():
        data = blob.read_bytes()
        out.append(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    return out


def test_oci_layout_cache_survives_corruption_and_never_holds_secrets(
        tmp_path: Path, base_images: BaseImages) -> None:
    require_tool("umoci")
    context = _context(tmp_path / "ctx")
    cache = tmp_path / "cache-layout"
    base = f"BASE={base_images.oci}"
    common = ("--no-push", "--cache-repo", f"oci:{cache}", base)
    cold = _kanipy(context, *common, "--oci-layout-path", str(tmp_path / "out1"))
    assert not any(cached_steps(cold).values()), cached_steps(cold)
    warm = _kanipy(context, *common, "--oci-layout-path", str(tmp_path / "out2"))
    assert all(cached_steps(warm).values()), cached_steps(warm)
    assert _layout_layers(tmp_path / "out2") == _layout_layers(tmp_path / "out1")

    # Entries are images that umoci can unpack: the RUN entry holds the RUN's file.
    index = json.loads((cache / "index.json").read_text())
    tags = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    unpacked = []
    for tag in (t for t in tags if not t.startswith("step-")):
        bundle = tmp_path / f"bundle-{tag[:12]}"
        run_tool(["umoci", "unpack", "--image", f"{cache}:{tag}", str(bundle)])
        unpacked.append(bundle)
    assert any((b / "rootfs" / "version").is_file() for b in unpacked), unpacked
    # The secret the last RUN read is in no blob of the cache, layers included.
    assert not any(SECRET.encode() in text for text in _blob_texts(cache))
    for bundle in unpacked:
        shutil.rmtree(bundle)

    # Corrupt every layer blob of the cache: warnings, every step runs, the build succeeds.
    layer_digests = set()
    for manifest in index["manifests"]:
        doc = json.loads((cache / "blobs" / "sha256" / manifest["digest"][7:]).read_text())
        layer_digests |= {layer["digest"][7:] for layer in doc["layers"]}
    for hexdigest in layer_digests:
        path = cache / "blobs" / "sha256" / hexdigest
        path.write_bytes(b"\0" * path.stat().st_size)
    broken = _kanipy(context, *common, "--oci-layout-path", str(tmp_path / "out3"))
    assert not any(cached_steps(broken).values()), cached_steps(broken)
    assert '"level": "warning"' in broken and "layer cache" in broken
    # The entries written again mend the cache.
    mended = _kanipy(context, *common)
    assert all(cached_steps(mended).values()), cached_steps(mended)


def test_cache_on_a_tls_registry_with_auth(
        tmp_path: Path, auth_registry: Registry, base_images: BaseImages) -> None:
    assert auth_registry.tls is not None
    context = _context(tmp_path / "ctx")
    config = _docker_config(tmp_path / "docker", auth_registry.host, AUTH_USER, AUTH_PASSWORD)
    args = ("-d", auth_registry.ref("cache/private:1"), f"BASE={base_images.oci}",
            "--registry-certificate", f"{auth_registry.host}={auth_registry.tls.ca_cert}")
    env = {"DOCKER_CONFIG": str(config)}
    cold = _kanipy(context, *args, env=env)
    assert not any(cached_steps(cold).values()), cached_steps(cold)
    warm = _kanipy(context, *args, env=env)
    assert all(cached_steps(warm).values()), cached_steps(warm)
    assert AUTH_PASSWORD not in warm


def test_registry_faults_with_the_cache_are_warnings(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    proxy = FaultProxy(registry.url).start()
    try:
        context = _context(tmp_path / "ctx")
        args = ("--no-push", "--cache-repo", f"{proxy.host}/cache/faulty",
                f"BASE={base_images.oci}")
        _kanipy(context, *args)
        # Every blob read from the cache arrives corrupted: each step warns and runs.
        proxy.inject("GET", "/blobs/sha256:", "corrupt", times=1000)
        corrupt = _kanipy(context, *args)
        assert not any(cached_steps(corrupt).values()), cached_steps(corrupt)
        assert "digest mismatch" in corrupt or "does not match" in corrupt, corrupt
        # The cache repository refuses us: one warning, and the build goes on without it.
        proxy.faults.clear()
        proxy.inject_error("GET", "/manifests/", 403, "DENIED", "not for you", times=1000)
        denied = _kanipy(context, *args)
        assert not any(cached_steps(denied).values()), cached_steps(denied)
        assert denied.count("without the layer cache") == 1, denied
        # The cache answering again, a fully cached build pushed to the same registry
        # mounts the cached layers from the cache repository instead of uploading them.
        proxy.faults.clear()
        before = len(proxy.requests)
        hits = _kanipy(context, *args[1:], "-d", f"{proxy.host}/cache/dest:1")
        assert all(cached_steps(hits).values()), cached_steps(hits)
        mounts = [p for m, p in proxy.requests[before:]
                  if m == "POST" and "mount=" in p and "faulty" in p]
        assert len(mounts) >= 5, "\n".join(f"{m} {p[:90]}" for m, p in proxy.requests[before:])
        # A cache repository that refuses new entries: said once, and the build succeeds.
        proxy.inject_error("POST", "/v2/cache/refused/", 403, "DENIED", "read-only", times=1000)
        refused = _kanipy(context, "--no-push", "--cache-repo", f"{proxy.host}/cache/refused",
                          f"BASE={base_images.oci}")
        assert refused.count("new entries cannot be stored") == 1, refused
    finally:
        proxy.stop()


def test_multi_stage_rebuild_hits_through_copy_from(
        tmp_path: Path, base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": (
            "ARG BASE\n"
            "FROM $BASE AS builder\nCOPY src/ /src/\nRUN cat /src/*.txt > /built.txt\n"
            "FROM builder AS tested\nRUN grep -q one /built.txt && echo ok > /tested\n"
            "FROM $BASE\nCOPY --from=builder /built.txt /app/built.txt\n"
            "COPY --from=tested /tested /app/tested\n"),
        "src/a.txt": "one\n",
    })
    cache = tmp_path / "cache-layout"
    common = ("--no-push", "--cache-repo", f"oci:{cache}", f"BASE={base_images.oci}")
    _kanipy(context, *common, "--oci-layout-path", str(tmp_path / "out1"))
    warm = _kanipy(context, *common, "--oci-layout-path", str(tmp_path / "out2"))
    assert all(cached_steps(warm).values()), cached_steps(warm)
    assert _layout_layers(tmp_path / "out2") == _layout_layers(tmp_path / "out1")
    # What the builder stage makes changed: the copies from it miss and name the file.
    (context / "src" / "a.txt").write_text("one, two\n")
    edited = _kanipy(context, *common, "--oci-layout-path", str(tmp_path / "out3"))
    assert not any(cached_steps(edited).values()), cached_steps(edited)
    reasons = _miss_reasons(edited)
    assert any("COPY --from=builder /built.txt" in r and "built.txt changed" in r
               for r in reasons), reasons
    bundle = tmp_path / "bundle"
    run_tool(["umoci", "unpack", "--image", f"{tmp_path / 'out3'}:latest", str(bundle)])
    assert (bundle / "rootfs" / "app" / "built.txt").read_text() == "one, two\n"
    assert (bundle / "rootfs" / "app" / "tested").read_text() == "ok\n"


def test_two_builds_sharing_a_cache_repository_at_once_both_succeed(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    context = _context(tmp_path / "ctx")
    repo = registry.ref("cache/shared")
    args = ["build", "--context", str(context), "--cache", "--cache-copy-layers",
            "--cache-repo", repo, "--secret", "id=token,env=TOKEN",
            "--build-arg", f"BASE={base_images.oci}", "--log-format", "json"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKEN": SECRET}
    procs = [subprocess.Popen([sys.executable, "-m", "kanipy", *args, "-d",
                               registry.ref(f"cache/concurrent-{i}:1")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()[-3000:]
    # Whichever wrote an entry last, the cache holds a full set: a third build hits.
    third = _kanipy(context, "-d", registry.ref("cache/concurrent-3:1"), "--cache-repo", repo,
                    f"BASE={base_images.oci}")
    assert all(cached_steps(third).values()), cached_steps(third)


def _blob_gets(proxy: FaultProxy, since: int, digests: set[str]) -> list[str]:
    """The blob GETs through ``proxy`` since request ``since`` for any of ``digests``."""
    return [path for method, path in proxy.requests[since:]
            if method == "GET" and "/blobs/" in path
            and path.rsplit("/", 1)[-1].split("?")[0] in digests]


def test_a_full_hit_downloads_no_layer_and_pushes_by_mounting(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    proxy = FaultProxy(registry.url).start()
    try:
        context = _context(tmp_path / "ctx")
        base_ref = base_images.oci.replace(registry.host, proxy.host)
        base = f"BASE={base_ref}"
        first = f"{proxy.host}/cache/lazy:1"
        cold = _kanipy(context, "-d", first, base)
        assert not any(cached_steps(cold).values()), cached_steps(cold)
        cold_layers = skopeo_manifest(registry.ref("cache/lazy:1"))["layers"]
        base_layers = {layer["digest"] for layer in skopeo_manifest(base_images.oci)["layers"]}
        layer_digests = {layer["digest"] for layer in cold_layers} | base_layers

        # Every step hits: no layer blob is read, neither the base's nor a cached one;
        # the push to another repository mounts each of them.
        before = len(proxy.requests)
        repo = ("--cache-repo", f"{proxy.host}/cache/lazy/cache")
        warm = _kanipy(context, "-d", f"{proxy.host}/cache/lazy-other:1", base, *repo)
        assert all(cached_steps(warm).values()), cached_steps(warm)
        assert _blob_gets(proxy, before, layer_digests) == []
        mounts = [p for m, p in proxy.requests[before:] if m == "POST" and "mount=" in p]
        assert len(mounts) == len({layer["digest"] for layer in cold_layers}), mounts
        # Byte for byte the cold build's layers, and every blob is really there.
        second = registry.ref("cache/lazy-other:1")
        assert skopeo_manifest(second)["layers"] == cold_layers
        rootfs = unpack_image(second, tmp_path / "check")
        assert (rootfs / "version").read_text() == "v1\n"
        assert (rootfs / "app" / "sub" / "b.txt").read_text() == "beta\n"

        # A cache whose blob is gone: the mount would fail, so it is checked first;
        # a warning, the stage is built again, and the push succeeds.
        cached_only = {layer["digest"] for layer in cold_layers} - base_layers
        victim = sorted(cached_only)[0]
        proxy.inject_error("HEAD", f"/cache/lazy/cache/blobs/{victim}", 404, "BLOB_UNKNOWN",
                           "gone", times=1000)
        proxy.inject_error("GET", f"/cache/lazy/cache/blobs/{victim}", 404, "BLOB_UNKNOWN",
                           "gone", times=1000)
        lost = _kanipy(context, "-d", f"{proxy.host}/cache/lazy-third:1", base, *repo)
        assert "building the stage again without cache hits" in lost, lost
        assert not any(cached_steps(lost).values()), cached_steps(lost)
        rootfs = unpack_image(registry.ref("cache/lazy-third:1"), tmp_path / "check3")
        assert (rootfs / "app.list").read_text().split() == ["a.txt", "sub"]
    finally:
        proxy.stop()


def test_a_fully_cached_stage_that_nothing_reads_is_not_unpacked(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    proxy = FaultProxy(registry.url).start()
    try:
        context = write_tree(tmp_path / "ctx", {
            "Dockerfile": ("ARG BASE\nFROM $BASE AS builder\nRUN echo built > /built\n"
                           "FROM builder AS tested\nRUN cat /built > /tested\n"
                           "FROM tested\nRUN cat /tested /built > /final\n"),
        })
        base_ref = base_images.oci.replace(registry.host, proxy.host)
        dest = f"{proxy.host}/cache/stages:1"
        _kanipy(context, "-d", dest, f"BASE={base_ref}")
        digests = {layer["digest"] for layer
                   in skopeo_manifest(registry.ref("cache/stages:1"))["layers"]}
        before = len(proxy.requests)
        warm = _kanipy(context, "-d", dest, f"BASE={base_ref}")
        assert all(cached_steps(warm).values()), cached_steps(warm)
        # Neither stage's root was made: not one layer blob was fetched.
        assert _blob_gets(proxy, before, digests) == []
        rootfs = unpack_image(registry.ref("cache/stages:1"), tmp_path / "check")
        assert (rootfs / "final").read_text() == "built\nbuilt\n"
    finally:
        proxy.stop()


LATE = """\
ARG BASE
FROM $BASE
RUN mkdir -p /srv/data && echo keep > /srv/data/keep && \\
    echo 'app:x:1234:1234::/home/app:/bin/sh' >> /etc/passwd && \\
    echo 'app:x:1234:' >> /etc/group && ln -s /srv/data /linked
COPY --chown=app:app late.txt /srv/data/
COPY late.txt /linked/via-link.txt
"""


def test_a_late_miss_gives_the_image_an_uncached_build_gives(
        tmp_path: Path, base_images: BaseImages) -> None:
    """The COPY after the edit runs on a root filled only under its destination (and the
    passwd/group files --chown reads: no RUN follows); the next, through a symlink, on
    the whole root."""
    context = write_tree(tmp_path / "ctx", {"Dockerfile": LATE, "late.txt": "one\n"})
    cache = tmp_path / "cache-layout"
    common = ("--no-push", "--reproducible", f"BASE={base_images.oci}")
    _kanipy(context, *common, "--cache-repo", f"oci:{cache}")
    (context / "late.txt").write_text("two\n")
    edited = _kanipy(context, *common, "--cache-repo", f"oci:{cache}",
                     "--oci-layout-path", str(tmp_path / "cached"))
    assert [v for k, v in cached_steps(edited).items()] == [True, False, False], \
        cached_steps(edited)
    # The same context built without any cache.
    build(context, "--no-push", "--reproducible", "--build-arg", f"BASE={base_images.oci}",
          "--oci-layout-path", str(tmp_path / "uncached")).check()
    assert _layout_layers(tmp_path / "cached") == _layout_layers(tmp_path / "uncached")
    bundle = tmp_path / "bundle"
    run_tool(["umoci", "unpack", "--image", f"{tmp_path / 'cached'}:latest", str(bundle)])
    rootfs = bundle / "rootfs"
    assert (rootfs / "srv/data/late.txt").stat().st_uid == 1234
    assert (rootfs / "srv/data/via-link.txt").read_text() == "two\n"
    assert sorted(os.listdir(rootfs / "srv/data")) == ["keep", "late.txt", "via-link.txt"]


CHAINED = """\
ARG BASE
FROM $BASE
ARG APP_VERSION=1
COPY req.txt /app/req.txt
RUN mkdir -p /deps && echo fixed > /deps/marker
RUN cp /app/req.txt /deps/installed
COPY app.txt /app/
LABEL version=$APP_VERSION
"""


def test_a_rerun_that_makes_the_same_layer_lets_later_steps_hit(
        tmp_path: Path, base_images: BaseImages) -> None:
    require_tool("umoci")
    context = write_tree(tmp_path / "ctx", {"Dockerfile": CHAINED, "req.txt": "flask\n",
                                            "app.txt": "app\n"})
    cache = tmp_path / "cache-layout"

    def run(version: str, out: str) -> str:
        return _kanipy(context, "--no-push", "--reproducible", "--cache-repo", f"oci:{cache}",
                       f"BASE={base_images.oci}", "--build-arg", f"APP_VERSION={version}",
                       "--oci-layout-path", str(tmp_path / out))

    run("1", "v1")
    # Both RUNs see APP_VERSION and run again, each making the layer it made before:
    # the COPY after them still hits.
    v2 = run("2", "v2")
    assert [v for v in cached_steps(v2).values()] == [True, False, False, True], cached_steps(v2)
    assert v2.count('"cache": "same-layer"') == 2, v2
    assert _layout_layers(tmp_path / "v2") == _layout_layers(tmp_path / "v1")
    # The entries the re-runs made carry the chain on: the same build hits throughout.
    again = run("2", "v2b")
    assert all(cached_steps(again).values()), cached_steps(again)
    # A step that makes the same layer on a different root does not chain: the RUN that
    # reads the edited file runs again and sees it.
    (context / "req.txt").write_text("flask\ndjango\n")
    edited = run("2", "edited")
    assert not any(cached_steps(edited).values()), cached_steps(edited)
    bundle = tmp_path / "bundle"
    run_tool(["umoci", "unpack", "--image", f"{tmp_path / 'edited'}:latest", str(bundle)])
    assert (bundle / "rootfs/deps/installed").read_text() == "flask\ndjango\n"


def test_a_build_arg_value_is_in_no_cache_blob_and_no_log(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    token = "s3cr3t-bu1ld-4rg-Zq"
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": ("ARG BASE\nFROM $BASE\nARG TOKEN\nARG DIR=/data\n"
                       "RUN test -n \"$TOKEN\" && mkdir -p $DIR && echo ok > $DIR/ok\n"
                       "COPY f.txt /opt/${TOKEN:+set}/\n"),
        "f.txt": "f\n",
    })
    cache = tmp_path / "cache-layout"
    args = ("--cache-repo", f"oci:{cache}", f"BASE={base_images.oci}",
            "--build-arg", f"TOKEN={token}", "--reproducible")
    first = registry.ref("cache/secret:1")
    cold = _kanipy(context, "-d", first, *args)
    second = registry.ref("cache/secret:2")
    warm = _kanipy(context, "-d", second, *args)
    assert all(cached_steps(warm).values()), cached_steps(warm)
    # The hit gives the history the uncached build wrote (BuildKit's |1 TOKEN=...),
    # filled back from this build's own value.
    assert skopeo_config(second)["history"] == skopeo_config(first)["history"]
    # A changed value misses, and says so without either value.
    other = _kanipy(context, "-d", registry.ref("cache/secret:3"), *args[:-3],
                    "--build-arg", "TOKEN=an0ther-t0ken-value", "--reproducible")
    assert any("ARG TOKEN changed (value given by --build-arg)" in r
               for r in _miss_reasons(other)), _miss_reasons(other)
    for log in (cold, warm, other):
        assert token not in log and "an0ther-t0ken-value" not in log
    blobs = _blob_texts(cache)
    assert blobs and not any(token.encode() in text or b"an0ther-t0ken" in text
                             for text in blobs)
    # As skopeo reads the cache's entries: configs hold a digest of the value only.
    index = json.loads((cache / "index.json").read_text())
    configs = [run_tool(["skopeo", "inspect", "--config", "--raw",
                         f"oci:{cache}:{m['annotations']['org.opencontainers.image.ref.name']}"])
               for m in index["manifests"]]
    assert configs and not any(token in c for c in configs)
    assert any("--build-arg sha256:" in c for c in configs)
