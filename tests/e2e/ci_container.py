"""Running ``kanipy build`` inside a runc container with Docker's default rights.

The shared pieces of the tests that reproduce a CI step (issue 9): a session
root with kanipy installed (tests/fixtures/runc.py) and a helper that runs one
build in it, with the build context and ``DOCKER_CONFIG`` bound in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.helpers import BuildRun
from tests.fixtures.runc import Bind, RuncStep, container_name, run_step


@dataclass
class CIContainer:
    """A root with Debian, python3 and kanipy; builds run in it one at a time."""

    rootfs: Path
    scratch: Path

    def build(self, context: Path, *args: str, name: str, env: dict[str, str] | None = None,
              uid: int = 0, extra_binds: list[Bind] | None = None) -> BuildRun:
        """``kanipy build --context /workspace/source ARGS`` as a CI step would run it.

        The context is bound at ``/workspace/source`` and an empty
        ``config.json`` at ``/kaniko/.docker`` (``DOCKER_CONFIG``), as Tekton
        and GitLab mount them for Kaniko.
        """
        docker_config = self.scratch / f"{name}-docker"
        docker_config.mkdir(parents=True, exist_ok=True)
        (docker_config / "config.json").write_text(json.dumps({"auths": {}}))
        step = RuncStep(
            args=["python3", "-m", "kanipy", "build", "--context", "/workspace/source", *args],
            env={"DOCKER_CONFIG": "/kaniko/.docker", **(env or {})},
            binds=[Bind(context, "/workspace/source"),
                   Bind(docker_config, "/kaniko/.docker", readonly=True),
                   *(extra_binds or [])],
            cwd="/workspace/source", uid=uid,
        )
        result = run_step(self.scratch / f"bundle-{name}", self.rootfs, step,
                          name=container_name(name))
        return BuildRun(result.returncode, result.stdout, result.stderr)
