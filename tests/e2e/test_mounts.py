"""RUN --mount: secrets, caches, binds and tmpfs, checked in the pushed image.

The secret tests look for the secret's value everywhere a user could leak it:
every layer blob (decompressed), the config with its history, and kanipy's own
output at ``--verbosity debug``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from tests.e2e.helpers import build, run_tool, skopeo_config, unpack_image, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry
from tests.tools import require_tool

SECRET = "tOp-5ecret-Value-8c1f"


def _image_bytes(ref: str, workdir: Path) -> list[bytes]:
    """The config and every layer of ``ref``, layers decompressed."""
    require_tool("skopeo")
    workdir.mkdir(parents=True, exist_ok=True)
    layout = workdir / "layout"
    run_tool(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
              f"oci:{layout}:x"])
    blobs = []
    for blob in (layout / "blobs/sha256").iterdir():
        data = blob.read_bytes()
        blobs.append(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    return blobs


def test_secret_is_readable_in_run_and_nowhere_else(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text(SECRET)
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        # Default path, a target, an env variable, and a non-root owner.
        "RUN --mount=type=secret,id=token cat /run/secrets/token > /seen-default\n"
        "RUN --mount=type=secret,id=token,target=/etc/app/token,uid=1000,mode=0440 "
        "ls -ln /etc/app/token > /seen-owner && wc -c < /etc/app/token > /seen-size\n"
        "RUN --mount=type=secret,id=fromenv,env=TOKEN "
        "printf %s \"$TOKEN\" | md5sum > /seen-env\n"
        "RUN --mount=type=secret,id=absent test ! -e /run/secrets/absent\n"
    )})
    dest = registry.ref("mounts/secret:1")
    result = build(context, "-d", dest, "--verbosity", "debug",
                   "--secret", f"id=token,src={secret_file}",
                   "--secret", "id=fromenv,env=MY_TOKEN",
                   env={"MY_TOKEN": SECRET}).check()

    rootfs = unpack_image(dest, tmp_path / "unpacked")
    assert (rootfs / "seen-default").read_text() == SECRET
    assert (rootfs / "seen-env").read_text().split()[0] == \
        hashlib.md5(SECRET.encode()).hexdigest()
    assert (rootfs / "seen-size").read_text().strip() == str(len(SECRET))
    owner_line = (rootfs / "seen-owner").read_text().split()
    assert owner_line[0] == "-r--r-----" and owner_line[2] == "1000"
    # The mount points kanipy had to create are not in the image.
    assert not (rootfs / "run/secrets").exists()
    assert not (rootfs / "etc/app").exists()

    for blob in _image_bytes(dest, tmp_path / "blobs"):
        if b"seen-default" in blob and SECRET.encode() in blob:
            # The one legitimate place: the file the Dockerfile wrote on purpose.
            blob = blob.replace(b"seen-default", b"")
            assert blob.count(SECRET.encode()) == 1
            continue
        assert SECRET.encode() not in blob
    history = json.dumps(skopeo_config(dest)["history"])
    assert SECRET not in history
    assert SECRET not in result.stderr and SECRET not in result.stdout


def test_required_secret_missing_fails_the_build(tmp_path: Path,
                                                  base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        "RUN --mount=type=secret,id=npmrc,required=true cat /run/secrets/npmrc\n")})
    result = build(context, "--no-push")
    assert result.returncode == 1
    assert "secret 'npmrc' is required" in result.stderr
    assert "--secret id=npmrc" in result.stderr


def test_ssh_mount_fails_clearly(tmp_path: Path, base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\nRUN --mount=type=ssh true\n")})
    result = build(context, "--no-push")
    assert result.returncode == 3
    assert "Dockerfile:2" in result.stderr and "type=ssh is not supported" in result.stderr


def test_cache_mount_persists_between_builds_and_stays_out_of_layers(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        "ARG RUN_ID\n"
        "RUN --mount=type=cache,target=/var/cache/app,id=appcache,uid=1000,mode=0700 "
        "ls -ln /var/cache | grep ' app$' > /cache-owner; "
        "cat /var/cache/app/previous > /seen-previous 2>/dev/null || echo none > /seen-previous; "
        "echo $RUN_ID > /var/cache/app/previous\n"
        "RUN --mount=type=cache,target=cache-rel ls -d /cache-rel && echo rel > /cache-rel/f\n"
    )})
    cache_dir = tmp_path / "cache"
    refs = []
    for run_id in ("first", "second"):
        dest = registry.ref(f"mounts/cache:{run_id}")
        build(context, "-d", dest, "--cache-dir", str(cache_dir),
              "--build-arg", f"RUN_ID={run_id}").check()
        refs.append(dest)

    first = unpack_image(refs[0], tmp_path / "first")
    second = unpack_image(refs[1], tmp_path / "second")
    assert (first / "seen-previous").read_text() == "none\n"
    assert (second / "seen-previous").read_text() == "first\n"
    owner = (first / "cache-owner").read_text().split()
    assert owner[0] == "drwx------" and owner[2] == "1000"
    for rootfs in (first, second):
        assert not (rootfs / "var/cache/app").exists()
        assert not (rootfs / "cache-rel").exists()
    # The cache lives under --cache-dir, beside the layer cache.
    assert list((cache_dir / "run-cache").glob("appcache-*/previous"))


def test_bind_and_tmpfs_mounts(tmp_path: Path, registry: Registry,
                               base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": (
            f"FROM {base_images.oci} AS tools\n"
            "RUN mkdir -p /opt/tool && echo v2 > /opt/tool/VERSION\n"
            f"FROM {base_images.oci}\n"
            "WORKDIR /work\n"
            # Read-only by default: a write fails, and the step says so.
            "RUN --mount=type=bind,source=src,target=/mnt/src "
            "cat /mnt/src/main.txt > /from-context && "
            "(touch /mnt/src/new 2>/dev/null && echo writable || echo readonly) > /bind-ro\n"
            # rw: the write succeeds inside the step and is discarded after it.
            "RUN --mount=type=bind,source=src,target=mnt,rw "
            "echo changed > /work/mnt/main.txt && cat /work/mnt/main.txt > /bind-rw\n"
            "RUN --mount=type=bind,from=tools,source=/opt/tool,target=/tool "
            "cat /tool/VERSION > /from-stage\n"
            # .dockerignore'd files are not in the context a bind mount shows.
            "RUN --mount=type=bind,target=/ctx ls /ctx/src > /ctx-listing\n"
            "RUN --mount=type=tmpfs,target=/scratch "
            "echo temp > /scratch/t && grep -q ' /scratch tmpfs' /proc/mounts && "
            "echo tmpfs > /tmpfs-seen\n"
        ),
        "src/main.txt": "from the context\n",
        "src/debug.log": "ignored\n",
        ".dockerignore": "**/*.log\n",
    })
    dest = registry.ref("mounts/bind:1")
    build(context, "-d", dest).check()
    rootfs = unpack_image(dest, tmp_path / "unpacked")
    assert (rootfs / "from-context").read_text() == "from the context\n"
    assert (rootfs / "bind-ro").read_text() == "readonly\n"
    assert (rootfs / "bind-rw").read_text() == "changed\n"
    assert (rootfs / "from-stage").read_text() == "v2\n"
    assert (rootfs / "ctx-listing").read_text() == "main.txt\n"
    assert (rootfs / "tmpfs-seen").read_text() == "tmpfs\n"
    for gone in ("mnt", "work/mnt", "tool", "scratch"):
        assert not (rootfs / gone).exists(), gone
    assert (context / "src/main.txt").read_text() == "from the context\n"


def test_cache_sharing_private_gets_its_own_instance(tmp_path: Path,
                                                     base_images: BaseImages) -> None:
    """Two holders at once: ``shared`` see one directory, ``private`` a second instance."""
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        "RUN --mount=type=cache,id=c,target=/a --mount=type=cache,id=c,target=/b "
        "echo shared > /a/f && cat /b/f > /shared-seen\n"
        "RUN --mount=type=cache,id=c,target=/a "
        "--mount=type=cache,id=c,target=/b,sharing=private "
        "(cat /b/f 2>/dev/null || echo empty) > /private-seen\n"
    )})
    layout = tmp_path / "layout"
    build(context, "--no-push", "--kanipy-dir", str(tmp_path / "work"),
          "--oci-layout-path", str(layout), "--image-format", "oci").check()
    require_tool("umoci")
    run_tool(["umoci", "unpack", "--image", f"{layout}:latest", str(tmp_path / "bundle")])
    rootfs = tmp_path / "bundle/rootfs"
    assert (rootfs / "shared-seen").read_text() == "shared\n"
    assert (rootfs / "private-seen").read_text() == "empty\n"
    # No --cache-dir: the caches live under --kanipy-dir.
    caches = [p for p in (tmp_path / "work/run-cache").glob("c-*") if p.is_dir()]
    assert len(caches) == 2
