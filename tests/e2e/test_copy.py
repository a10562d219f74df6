"""COPY as Docker does it: built by kanipy, pushed, read back with umoci and skopeo.

Each test builds one Dockerfile exercising several rules at once (builds cost
seconds), then checks what a user of the image would see: paths, modes, owners,
contents, link targets and mtimes.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from kanipy.executor.handlers.copy_sources import go_match_regex
from tests.e2e.helpers import (
    build,
    finish_copy_context,
    lstat_info,
    skopeo_config,
    unpack_image,
    write_tree,
)
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry

MTIME = 1_600_000_000  # a context mtime that no build step could produce by accident


@pytest.mark.parametrize(("pattern", "name", "matched"), [
    ("*", ".hidden", True),        # Go's Match lets * match a leading dot
    ("*.txt", "a.txt", True),
    ("*", "a/b", False),           # never across /
    ("a?c", "abc", True),
    ("a?c", "a/c", False),
    ("[abc].txt", "b.txt", True),
    ("[^abc].txt", "b.txt", False),
    ("[^abc].txt", "d.txt", True),
    ("[a-c]x", "bx", True),
    ("\\*x", "*x", True),          # \\ escapes
    ("\\*x", "ax", False),
    ("[!a]x", "!x", True),         # Go negates with ^ only; ! is a plain member
    ("[", "[", None),              # malformed: no match (Go's ErrBadPattern)
], ids=lambda v: repr(v))
def test_go_match_rules(pattern: str, name: str, matched: bool | None) -> None:
    regex = go_match_regex(pattern)
    if matched is None:
        assert regex is None
    else:
        assert regex is not None and bool(regex.match(name)) is matched


def _context(root: Path) -> Path:
    write_tree(root, {
        "hello.txt": "hello\n",
        "exec.sh": "#!/bin/sh\necho hi\n",
        ".hidden.sh": "hidden\n",
        "a1.txt": "a1\n", "b.txt": "b\n", "c.txt": "c\n", "d.txt": "d\n",
        "dir/top.txt": "top\n",
        "dir/sub/deep.txt": "deep\n",
        "dir/build.log": "log\n",
        "links/rel": b"", "hard/one": "same inode\n",
        "ignored/drop.txt": "dropped\n",
        "ignored/keep.txt": "kept by an exception\n",
        "secret.key": "never copied\n",
        ".dockerignore": "ignored\n!ignored/keep.txt\nsecret.key\n",
    })
    (root / "links/dangling").symlink_to("nowhere")
    return finish_copy_context(root, MTIME)


def test_copy_from_the_context(tmp_path: Path, registry: Registry,
                               base_images: BaseImages) -> None:
    context = _context(tmp_path / "ctx")
    (context / "Dockerfile").write_text(
        f"FROM {base_images.oci}\n"
        "RUN mkdir -p /realdir /existing && ln -s /realdir /linkdir && echo old > /old "
        "&& chmod 700 /existing && touch -d @1000 /existing && echo x > /existing-file\n"
        "WORKDIR /work\n"
        "COPY hello.txt .\n"                       # relative to WORKDIR
        "COPY hello.txt /newdir/\n"                # dest/ creates dest/file
        "COPY hello.txt /renamed\n"                # a file becomes the destination
        "COPY hello.txt /old\n"                    # onto an existing file
        "COPY dir /dircopy\n"                      # a directory copies its contents
        "COPY dir /existing\n"                     # into an existing dir: left as it is
        "COPY *.sh /scripts/\n"                    # * matches dotfiles too
        "COPY [\"a?.txt\", \"[bc].txt\", \"/wild/\"]\n"
        "COPY links /links/\n"
        "COPY hard /hard/\n"
        "COPY hello.txt /linkdir/\n"               # through an image symlink
        "COPY . /all/\n"
    )
    dest = registry.ref("e2e/copy-context:latest")
    build(context, "--destination", dest).check()
    root = unpack_image(dest, tmp_path / "out")

    assert (root / "work/hello.txt").read_text() == "hello\n"
    assert lstat_info(root / "work/hello.txt") == ("0o640", 0, 0)
    assert int(os.lstat(root / "work/hello.txt").st_mtime) == MTIME
    assert (root / "newdir/hello.txt").is_file()
    assert (root / "renamed").read_text() == "hello\n"
    assert (root / "old").read_text() == "hello\n"

    # The contents of dir, never dir itself; a created destination is 0755 root.
    assert sorted(p.name for p in (root / "dircopy").iterdir()) == ["build.log", "sub", "top.txt"]
    assert lstat_info(root / "dircopy") == ("0o755", 0, 0)
    assert lstat_info(root / "dircopy/sub") == ("0o750", 0, 0)
    assert int(os.lstat(root / "dircopy/sub").st_mtime) == MTIME
    assert not (root / "dircopy/app.sock").exists(), "sockets are skipped"
    # An existing destination keeps its own mode (its mtime moves: entries were added).
    assert lstat_info(root / "existing") == ("0o700", 0, 0)
    assert (root / "existing/sub/deep.txt").read_text() == "deep\n"

    assert sorted(p.name for p in (root / "scripts").iterdir()) == [".hidden.sh", "exec.sh"]
    assert lstat_info(root / "scripts/exec.sh") == ("0o755", 0, 0)
    assert sorted(p.name for p in (root / "wild").iterdir()) == ["a1.txt", "b.txt", "c.txt"]

    assert os.readlink(root / "links/rel") == "../hello.txt"
    assert os.readlink(root / "links/abs") == "/etc/passwd"
    assert os.readlink(root / "links/dangling") == "nowhere"
    one, two = os.lstat(root / "hard/one"), os.lstat(root / "hard/two")
    assert (one.st_ino, one.st_nlink) == (two.st_ino, 2), "hardlinks stay hardlinks"

    assert (root / "realdir/hello.txt").is_file()
    assert os.readlink(root / "linkdir") == "/realdir"

    assert (root / "all/ignored/keep.txt").is_file(), "a ! exception re-includes"
    assert not (root / "all/ignored/drop.txt").exists()
    assert not (root / "all/secret.key").exists()
    assert (root / "all/.dockerignore").is_file()

    config = skopeo_config(dest)
    copies = [h["created_by"] for h in config["history"] if "COPY" in h.get("created_by", "")]
    assert copies[0] == "COPY hello.txt . # buildkit"


@pytest.mark.parametrize(("dockerfile", "code", "message"), [
    ("COPY missing.txt /\n", 1, "'missing.txt' not found in the build context"),
    ("COPY secret.key /\n", 1, "'secret.key' not found: it is excluded by .dockerignore"),
    ("COPY links/abs /x\n", 1, "'links/abs' not found in the build context (it is a "
                               "symbolic link"),
    ("COPY hello.txt exec.sh /dst\n", 3, "the destination must be a directory and end "
                                         "with a /"),
    ("COPY *.txt /dst\n", 1, "the destination must be a directory ending in /"),
    ("RUN echo x > /file\nCOPY dir /file\n", 1, "cannot copy the directory 'dir' to /file"),
    ("COPY --chown=nosuchuser hello.txt /\n", 1, "--chown=nosuchuser: unable to find user"),
], ids=["missing", "dockerignored", "link-out-of-context", "several-no-slash",
        "wildcard-no-slash", "dir-onto-file", "unknown-user"])
def test_copy_errors(tmp_path: Path, base_images: BaseImages, dockerfile: str, code: int,
                     message: str) -> None:
    context = _context(tmp_path / "ctx")
    (context / "Dockerfile").write_text(f"FROM {base_images.oci}\n{dockerfile}")
    result = build(context, "--no-push")
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Dockerfile:" in result.stderr


def test_copy_flags(tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    context = _context(tmp_path / "ctx")
    (context / "Dockerfile").write_text(
        f"FROM {base_images.oci} AS builder\n"
        "RUN mkdir -p /out/sub && echo x > /out/sub/f && chown -R 65534:65534 /out "
        "&& chmod 0750 /out/sub\n"
        f"FROM {base_images.oci}\n"
        "RUN echo 'app:x:1000:2000::/home/app:/bin/sh' >> /etc/passwd "
        "&& echo 'appgrp:x:2000:' >> /etc/group && echo 'other:x:3000:' >> /etc/group\n"
        "COPY --chown=app hello.txt /chown/user/deep/\n"
        "COPY --chown=1234 hello.txt /chown-num\n"
        "COPY --chown=app:other hello.txt /chown-grp\n"
        "COPY --chmod=0600 exec.sh /chmod-oct\n"
        "COPY --chmod=u+x,g-r hello.txt /chmod-sym\n"
        "COPY --chmod=a+X dir /chmod-x/\n"
        "COPY --from=builder /out /from-stage/\n"
        "COPY --from=0 /out/sub/f /from-index\n"
        f"COPY --from={base_images.oci} /etc/group /from-image\n"
        "COPY --parents dir/sub/deep.txt /parents/\n"
        "COPY --parents ./dir/./sub/deep.txt /pivot/\n"
        "COPY --exclude=*.log --exclude=sub dir /excl/\n"
        "COPY --exclude=b.txt *.txt /excl-wild/\n"
        "COPY --link hello.txt /linked\n"
    )
    dest = registry.ref("e2e/copy-flags:latest")
    build(context, "--destination", dest).check()
    root = unpack_image(dest, tmp_path / "out")

    # A name gives its primary group; created parents get the --chown owner (BuildKit).
    assert lstat_info(root / "chown/user/deep/hello.txt") == ("0o640", 1000, 2000)
    for created in ("chown", "chown/user", "chown/user/deep"):
        assert lstat_info(root / created) == ("0o755", 1000, 2000), created
    assert lstat_info(root / "chown-num") == ("0o640", 1234, 1234)
    assert lstat_info(root / "chown-grp") == ("0o640", 1000, 3000)
    assert lstat_info(root / "chmod-oct") == ("0o600", 0, 0)
    assert lstat_info(root / "chmod-sym") == ("0o700", 0, 0)       # 0640 u+x g-r
    assert lstat_info(root / "chmod-x/sub") == ("0o751", 0, 0)     # dirs get X
    assert lstat_info(root / "chmod-x/top.txt") == ("0o644", 0, 0)  # files without x don't

    assert lstat_info(root / "from-stage/sub") == ("0o750", 65534, 65534)  # owners kept
    assert lstat_info(root / "from-stage/sub/f") == ("0o644", 65534, 65534)
    assert (root / "from-index").read_text() == "x\n"
    assert lstat_info(root / "from-index") == ("0o644", 65534, 65534)
    assert "nobody" in (root / "from-image").read_text()

    assert (root / "parents/dir/sub/deep.txt").read_text() == "deep\n"
    assert lstat_info(root / "parents/dir/sub") == ("0o750", 0, 0)  # the source dir's mode
    assert (root / "pivot/sub/deep.txt").is_file()
    assert not (root / "pivot/dir").exists()

    assert sorted(p.name for p in (root / "excl").iterdir()) == ["top.txt"]
    assert sorted(p.name for p in (root / "excl-wild").iterdir()) == [
        "a1.txt", "c.txt", "d.txt", "hello.txt"]
    assert (root / "linked").read_text() == "hello\n"


def test_copy_heredocs(tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        "ARG NAME=world\n"
        "COPY <<EOF /greeting.txt\n"
        "hello $NAME\n"
        "EOF\n"
        "COPY <<one.txt <<two.txt /docs/\n"
        "first\n"
        "one.txt\n"
        "second\n"
        "two.txt\n"
        "COPY <<-EOF /tabs.txt\n"
        "\t\tindented\n"
        "\tEOF\n"
        "COPY --chmod=755 <<'EOF' /run.sh\n"
        "echo $NAME\n"
        "EOF\n"
    )})
    dest = registry.ref("e2e/copy-heredoc:latest")
    build(context, "--destination", dest).check()
    root = unpack_image(dest, tmp_path / "out")
    assert (root / "greeting.txt").read_text() == "hello world\n"
    assert lstat_info(root / "greeting.txt") == ("0o644", 0, 0)
    assert (root / "docs/one.txt").read_text() == "first\n"
    assert (root / "docs/two.txt").read_text() == "second\n"
    assert (root / "tabs.txt").read_text() == "indented\n"
    assert (root / "run.sh").read_text() == "echo $NAME\n"
    assert lstat_info(root / "run.sh") == ("0o755", 0, 0)


def _last_layer_names(layout: Path) -> list[str]:
    """Entry names of an image's last layer, read from the OCI layout skopeo wrote."""
    def blob(digest: str) -> Path:
        return layout / "blobs" / digest.replace(":", "/")
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    with tarfile.open(blob(manifest["layers"][-1]["digest"])) as tar:
        return sorted(m.name.rstrip("/") for m in tar.getmembers())


def test_copy_into_existing_tree_snapshots_only_what_it_wrote(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {
        "overlay/etc/app.conf": "conf\n", "overlay/bin/tool": "#!/bin/sh\n",
        "Dockerfile": f"FROM {base_images.oci}\nCOPY overlay/ /\n",
    })
    (context / "overlay/bin").chmod(0o755)
    dest = registry.ref("e2e/copy-overlay:latest")
    build(context, "--destination", dest).check()
    root = unpack_image(dest, tmp_path / "out")
    # /bin holds busybox's applets; only the copied entries (and their parents) are new.
    assert _last_layer_names(tmp_path / "out/layout") == ["bin", "bin/tool", "etc",
                                                          "etc/app.conf"]
    assert (root / "bin/sh").is_symlink() and (root / "etc/passwd").is_file()
