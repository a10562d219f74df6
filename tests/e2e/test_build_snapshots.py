"""Snapshots end to end: what RUN changed comes out as layers other tools apply correctly."""

from __future__ import annotations

import os
import platform
import stat
from pathlib import Path

from tests.e2e.build_support import (
    add_file,
    add_symlink,
    copy_to_layout,
    layer_members,
    layer_tar,
    push_image,
)
from tests.e2e.helpers import build, lstat_info, run_tool, skopeo_config, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry

SCAFFOLDING = ("proc/", "dev/", "sys/", "etc/resolv.conf", "etc/hosts")


def test_run_changes_come_out_right(tmp_path: Path, registry: Registry,
                                    base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        # Layer 1: things the next step replaces, and files to change.
        "RUN mkdir -p /dir-to-file/sub && echo a > /dir-to-file/sub/f"
        " && echo b > /file-to-dir && mkdir /target && ln -s /target /link-to-dir"
        " && echo c > /owned && echo d > /suid\n"
        # No change at all: no layer.
        "RUN true\n"
        # Layer 2: replacements, deletions (from the base image and from layer 1),
        # modes, owners, setuid, hardlinks; the scaffolding is used but not kept.
        "RUN rm -rf /dir-to-file && echo now-a-file > /dir-to-file"
        " && rm /file-to-dir && mkdir /file-to-dir && echo inside > /file-to-dir/f"
        " && rm /link-to-dir && mkdir /link-to-dir && echo real > /link-to-dir/f"
        " && rm /bin/vi && rm -r /home"
        " && chown 123:456 /owned && chmod 640 /owned && chmod 4755 /suid"
        " && chmod 600 /etc/group"
        " && echo h > /h1 && ln /h1 /h2 && ln /etc/passwd /passwd-link"
        " && cat /etc/resolv.conf /etc/hosts > /dev/null && ls /proc/self /sys > /dev/null"
        " && echo scratch > /dev/shm/x"
        " && mknod /chardev c 1 3 && mkdir -m 2775 /sgid && mkdir -m 1777 /sticky"
        " && touch -d '2001-02-03 04:05:06' /old\n"
    )})
    dest = registry.ref("e2e/snapshots:latest")
    build(context, "-d", dest).check()

    config = skopeo_config(dest)
    history = config["history"]
    with_layers = [h for h in history if not h.get("empty_layer")]
    assert len(with_layers) == len(config["rootfs"]["diff_ids"]) == 3  # base, RUN 1, RUN 3
    run_true = [h for h in history if "true" in h["created_by"] and "RUN" in h["created_by"]]
    assert run_true and run_true[0].get("empty_layer") is True, history

    layout = tmp_path / "layout"
    manifest = copy_to_layout(dest, layout)
    listings = layer_members(layout, manifest)
    assert len(listings) == 3
    for names in listings[1:]:
        for name in names:
            assert not name.startswith(SCAFFOLDING), f"{name} must never be in a layer"
        assert "proc" not in names and "sys" not in names and "dev" not in names, names
    assert "bin/.wh.vi" in listings[2]
    assert "home" not in listings[2] and ".wh.home" in listings[2]

    bundle = tmp_path / "bundle"
    run_tool(["umoci", "unpack", "--image", f"{layout}:image", str(bundle)])
    root = bundle / "rootfs"
    assert not os.path.lexists(root / "bin/vi"), "deleted from the base image"
    assert not os.path.lexists(root / "home")
    assert (root / "bin/sh").is_symlink()
    assert (root / "dir-to-file").read_text() == "now-a-file\n"
    assert stat.S_ISDIR(os.lstat(root / "file-to-dir").st_mode)
    assert (root / "file-to-dir/f").read_text() == "inside\n"
    assert stat.S_ISDIR(os.lstat(root / "link-to-dir").st_mode)
    assert (root / "link-to-dir/f").read_text() == "real\n"
    assert lstat_info(root / "owned") == ("0o640", 123, 456)
    assert lstat_info(root / "suid") == ("0o4755", 0, 0)
    assert lstat_info(root / "etc/group")[0] == "0o600"
    assert os.lstat(root / "h1").st_ino == os.lstat(root / "h2").st_ino
    assert os.lstat(root / "passwd-link").st_ino == os.lstat(root / "etc/passwd").st_ino
    assert (root / "passwd-link").read_text().startswith("root:x:0:0:")
    chardev = os.lstat(root / "chardev")
    assert stat.S_ISCHR(chardev.st_mode) and os.major(chardev.st_rdev) == 1 \
        and os.minor(chardev.st_rdev) == 3
    assert lstat_info(root / "sgid")[0] == "0o2775"
    assert lstat_info(root / "sticky")[0] == "0o1777"
    assert os.lstat(root / "old").st_mtime == 981173106  # 2001-02-03T04:05:06Z
    assert not (root / "dev/shm/x").exists()
    assert not (root / "etc/resolv.conf").exists()
    assert not (root / "etc/hosts").exists()
    assert list((root / "proc").iterdir()) == []


def test_image_own_resolv_conf_and_hosts_are_left_as_they_were(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    """The step sees the host's files; the image keeps its own (a dangling symlink, a file)."""
    extra = layer_tar(lambda t: (
        add_symlink(t, "etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf"),
        add_file(t, "etc/hosts", b"10.0.0.1 image-hosts\n"),
    ))
    base = push_image(tmp_path / "base", registry.ref("e2e/own-resolv:1"),
                      [base_images.layer_tar, extra], _arch())
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base}\n"
        "RUN cat /etc/resolv.conf > /seen-resolv && cat /etc/hosts > /seen-hosts"
        " && touch /etc/newfile\n"
    )})
    dest = registry.ref("e2e/own-resolv-result:latest")
    build(context, "-d", dest).check()
    layout = tmp_path / "layout"
    manifest = copy_to_layout(dest, layout)
    run_layer = layer_members(layout, manifest)[-1]
    assert "etc/newfile" in run_layer
    for name in run_layer:
        assert not name.startswith(("etc/resolv.conf", "etc/hosts", "run")), run_layer
    bundle = tmp_path / "bundle"
    run_tool(["umoci", "unpack", "--image", f"{layout}:image", str(bundle)])
    root = bundle / "rootfs"
    assert os.readlink(root / "etc/resolv.conf") == "../run/systemd/resolve/stub-resolv.conf"
    assert not os.path.lexists(root / "run")
    assert (root / "etc/hosts").read_text() == "10.0.0.1 image-hosts\n"
    assert (root / "seen-hosts").read_text() == Path("/etc/hosts").read_text()
    assert (root / "seen-resolv").read_text() == Path("/etc/resolv.conf").read_text()


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
