"""The rootfs the runner tests run RUN steps in."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.tools import require_root, require_tool

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
app:x:1000:1000:App:/home/app:/bin/sh
"""
GROUP = """\
root:x:0:
nogroup:x:65534:
app:x:1000:
extra:x:1001:app
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A busybox rootfs with users root, nobody and app (in group extra), /tmp 1777."""
    require_root()
    busybox = require_tool("busybox")
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)
    (root / "root").mkdir(mode=0o700)
    return root
