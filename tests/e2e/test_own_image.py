"""kanipy's own image, built by kanipy from the repository's Dockerfile, then used as CI uses it.

The image is built on the local Debian + python3 base (plus pip, installed by
a kanipy build from Debian's python3-pip-whl wheel) from wheels downloaded
once into the test cache, so no step needs more than Debian's mirror and
PyPI. The built image is unpacked with umoci and run with runc, uid 0 and
Docker's default capabilities and seccomp profile, exactly as a Tekton or
GitLab step runs Kaniko's image: ``/kaniko/executor`` with Kaniko's argv
builds an example Dockerfile with RUN steps and pushes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import build, skopeo_config, skopeo_manifest, unpack_image, write_tree
from tests.fixtures.registry import Registry
from tests.fixtures.runc import Bind, RuncStep, container_name, run_step
from tests.tools import unavailable

REPO = Path(__file__).resolve().parents[2]
PIP_WHEEL = Path("/usr/share/python-wheels/pip-23.0.1-py3-none-any.whl")
# kanipy's runtime dependencies (pyproject.toml) and the build backend.
REQUIREMENTS = ("click>=8.1", "requests>=2.31", "dockerfile-parse>=2.0", "zstandard>=0.22",
                "isal>=1.6,<2", "setuptools>=61")

EXAMPLE = """\
FROM {base}
RUN echo built-by-kanipy-image > /built && test -c /dev/null && nproc > /nproc
RUN --mount=type=cache,target=/var/cache/example \\
    echo cached > /var/cache/example/f && getent hosts localhost > /hosts
"""


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """Wheels of kanipy's dependencies for this Python, downloaded once from PyPI."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kanipy-test"
    wheels = cache / f"wheels-py{sys.version_info.major}{sys.version_info.minor}"
    if not (wheels / ".complete").exists():
        wheels.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "-q",
             "-d", str(wheels), *REQUIREMENTS], capture_output=True, text=True)
        if proc.returncode != 0:
            unavailable(f"cannot download kanipy's dependencies from PyPI: {proc.stderr}")
        (wheels / ".complete").touch()
    return wheels


def _source_context(directory: Path, wheels: Path) -> Path:
    """The repository's files the image needs, and the wheelhouse, as a build context."""
    directory.mkdir(parents=True)
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, directory / name)
    shutil.copytree(REPO / "kanipy", directory / "kanipy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(wheels, directory / "wheels")
    return directory


@dataclass
class KanipyImage:
    ref: str
    rootfs: Path  # unpacked with umoci


@pytest.fixture(scope="module")
def kanipy_image(tmp_path_factory: pytest.TempPathFactory, registry: Registry,
                 debian_python_base: str, wheelhouse: Path) -> KanipyImage:
    """kanipy's image built by kanipy from the repository's Dockerfile, and unpacked."""
    tmp_path = tmp_path_factory.mktemp("own-image")
    if not PIP_WHEEL.exists():
        unavailable(f"{PIP_WHEEL} (Debian's python3-pip-whl) is not installed")
    # A python base with pip, as python:slim is (made by kanipy, from Debian's wheel).
    wheel = f"/tmp/{PIP_WHEEL.name}"
    pip_context = write_tree(tmp_path / "pip-base", {"Dockerfile": (
        f"FROM {debian_python_base}\n"
        f"COPY {PIP_WHEEL.name} {wheel}\n"
        f"RUN python3 {wheel}/pip install -q --no-index --break-system-packages "
        f"--root-user-action=ignore {wheel} && rm {wheel}\n")})
    shutil.copy2(PIP_WHEEL, pip_context / PIP_WHEEL.name)
    pip_base = registry.ref("own-image/python-pip:1")
    build(pip_context, "-d", pip_base).check()

    image = registry.ref("own-image/kanipy:test")
    context = _source_context(tmp_path / "src", wheelhouse)
    build(context, "-d", image, "--build-arg", f"BASE={pip_base}",
          "--build-arg", "PIP_OPTIONS=--no-index --find-links /tmp/kanipy-src/wheels").check()
    return KanipyImage(image, unpack_image(image, tmp_path / "unpacked"))


def test_kanipy_builds_its_own_image_which_builds_in_a_ci_container(
        tmp_path: Path, registry: Registry, debian_python_base: str,
        kanipy_image: KanipyImage) -> None:
    image, rootfs = kanipy_image.ref, kanipy_image.rootfs
    config = skopeo_config(image)["config"]
    assert config["Entrypoint"] == ["kanipy"]
    assert "DOCKER_CONFIG=/kaniko/.docker" in config["Env"]
    layers = skopeo_manifest(image)["layers"]
    own = layers[-1]["size"]  # the layer this Dockerfile adds over its base
    print(f"kanipy's image: {sum(layer['size'] for layer in layers) / 1e6:.1f} MB "
          f"compressed, {own / 1e6:.1f} MB of it kanipy and its dependencies")
    assert not (rootfs / "tmp" / "kanipy-src").exists(), "the bound sources stay out"
    assert os.access(rootfs / "kaniko" / "executor", os.X_OK)

    example = write_tree(tmp_path / "example", {"Dockerfile": EXAMPLE.format(
        base=debian_python_base)})
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    (docker_config / "config.json").write_text(json.dumps({"auths": {}}))
    dest = registry.ref("own-image/example:1")
    # Kaniko's argv, as Tekton's catalog Task and GitLab's docs pass it.
    step = RuncStep(
        args=["/kaniko/executor", "--context", "dir:///workspace/source",
              "--dockerfile", "/workspace/source/Dockerfile", "--destination", dest,
              "--digest-file", "/workspace/source/digest"],
        binds=[Bind(example, "/workspace/source"),
               Bind(docker_config, "/kaniko/.docker", readonly=True)],
        env={"DOCKER_CONFIG": "/kaniko/.docker"}, cwd="/workspace")
    result = run_step(tmp_path / "bundle", rootfs, step, name=container_name("own-image"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RUN steps run unprivileged" in result.stderr
    digest = (example / "digest").read_text().strip()
    assert digest.startswith("sha256:")
    built = unpack_image(dest, tmp_path / "example-image")
    assert (built / "built").read_text() == "built-by-kanipy-image\n"
    assert (built / "hosts").read_text().split()[0] == "127.0.0.1"
    assert not (built / "var/cache/example").exists()


TEKTON = REPO / "examples" / "tekton"
# Where Tekton puts a TaskRun's workspaces, results and home in the step's container.
WORKSPACE_ROOT = "/workspace"
RESULTS_DIR = "/tekton/results"
LOAD_YAML = ("import json, sys, yaml; "
             "json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)")


def load_yaml(path: Path) -> dict[str, Any]:
    """One YAML document, read by Debian's python3-yaml (PyYAML is no dependency of kanipy's)."""
    python = shutil.which("python3", path="/usr/bin") or "/usr/bin/python3"
    proc = subprocess.run([python, "-c", LOAD_YAML, str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        unavailable(f"cannot read YAML with {python} (Debian's python3-yaml): {proc.stderr}")
    docs = json.loads(proc.stdout)
    assert len(docs) == 1, f"{path.name} holds one document"
    return dict(docs[0])


_VARIABLE = re.compile(r"\$\(([^)]+)\)")


def substitute(value: str, variables: dict[str, str]) -> str:
    """Tekton's ``$(...)`` substitution of strings; an unknown variable fails the test."""
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in variables, f"unknown Tekton variable $({name}) in {value!r}"
        return variables[name]
    return _VARIABLE.sub(one, value)


def substitute_list(values: list[str], variables: dict[str, str],
                    arrays: dict[str, list[str]]) -> list[str]:
    """A list where an element ``$(params.X[*])`` expands to the array param X."""
    out: list[str] = []
    for value in values:
        match = re.fullmatch(r"\$\(params\.([\w-]+)\[\*\]\)", value)
        if match:
            assert match.group(1) in arrays, f"{value} names no array param"
            out.extend(arrays[match.group(1)])
        else:
            out.append(substitute(value, variables))
    return out


def pipeline_task_params(run: dict[str, Any], pipeline: dict[str, Any], task_name: str
                         ) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The params a PipelineRun gives a Pipeline task, as Tekton resolves them."""
    given = {p["name"]: p["value"] for p in run["spec"]["params"]}
    strings: dict[str, str] = {}
    arrays: dict[str, list[str]] = {}
    for param in pipeline["spec"]["params"]:
        value = given.get(param["name"], param.get("default"))
        assert value is not None, f"PipelineRun gives no value for {param['name']}"
        if isinstance(value, list):
            arrays[param["name"]] = value
        else:
            strings[f"params.{param['name']}"] = value
    task = next(t for t in pipeline["spec"]["tasks"] if t["name"] == task_name)
    out_strings: dict[str, str] = {}
    out_arrays: dict[str, list[str]] = {}
    for param in task["params"]:
        if isinstance(param["value"], list):
            out_arrays[param["name"]] = substitute_list(param["value"], strings, arrays)
        else:
            out_strings[param["name"]] = substitute(param["value"], strings)
    return out_strings, out_arrays


def test_tekton_task_pipeline_and_run_refer_to_each_other() -> None:
    task = load_yaml(TEKTON / "task.yaml")
    pipeline = load_yaml(TEKTON / "pipeline.yaml")
    run = load_yaml(TEKTON / "pipelinerun.yaml")
    assert (task["kind"], pipeline["kind"], run["kind"]) == ("Task", "Pipeline", "PipelineRun")
    spec = task["spec"]
    assert {p["name"] for p in spec["params"]} == {
        "IMAGE", "DOCKERFILE", "CONTEXT", "EXTRA_ARGS", "BUILDER_IMAGE"}
    assert {w["name"] for w in spec["workspaces"]} == {"source", "dockerconfig"}
    assert {r["name"] for r in spec["results"]} == {"IMAGE_DIGEST", "IMAGE_URL"}
    env = {e["name"]: e["value"] for e in spec["steps"][0]["env"]}
    assert env["DOCKER_CONFIG"] == "/tekton/home/.docker"
    dockerconfig = next(w for w in spec["workspaces"] if w["name"] == "dockerconfig")
    assert dockerconfig["mountPath"] == env["DOCKER_CONFIG"]

    # The Pipeline's build task uses this Task, after the clone, with its params.
    pipe = pipeline["spec"]
    build_task = next(t for t in pipe["tasks"] if t["taskRef"]["name"] == task["metadata"]["name"])
    clone = next(t for t in pipe["tasks"] if t["taskRef"]["name"] == "git-clone")
    assert build_task["runAfter"] == [clone["name"]]
    task_params = {p["name"]: p for p in spec["params"]}
    passed = {p["name"] for p in build_task["params"]}
    assert passed <= set(task_params)
    assert {n for n, p in task_params.items() if "default" not in p} <= passed
    pipeline_params = {p["name"] for p in pipe["params"]}
    pipeline_workspaces = {w["name"] for w in pipe["workspaces"]}
    for t in pipe["tasks"]:
        for p in t["params"]:
            values = p["value"] if isinstance(p["value"], list) else [p["value"]]
            for value in values:
                for name in re.findall(r"\$\(params\.([\w-]+)(?:\[\*\])?\)", value):
                    assert name in pipeline_params, f"{t['name']} uses unknown param {name}"
        for w in t["workspaces"]:
            assert w["workspace"] in pipeline_workspaces
    assert {w["name"] for w in build_task["workspaces"]} <= {w["name"] for w in spec["workspaces"]}
    for result in pipe["results"]:
        task_name, _, result_name = result["value"][len("$(tasks."):-1].partition(".results.")
        assert task_name == build_task["name"]
        assert result_name in {r["name"] for r in spec["results"]}

    # The PipelineRun runs this Pipeline with every param it needs and its workspaces.
    assert run["spec"]["pipelineRef"]["name"] == pipeline["metadata"]["name"]
    given = {p["name"] for p in run["spec"]["params"]}
    assert given <= pipeline_params
    assert {p["name"] for p in pipe["params"] if "default" not in p} <= given
    assert {w["name"] for w in run["spec"]["workspaces"]} == pipeline_workspaces


def test_tekton_task_step_runs_as_tekton_runs_it(
        tmp_path: Path, registry: Registry, debian_python_base: str,
        kanipy_image: KanipyImage) -> None:
    task = load_yaml(TEKTON / "task.yaml")
    pipeline = load_yaml(TEKTON / "pipeline.yaml")
    run = load_yaml(TEKTON / "pipelinerun.yaml")
    dest = registry.ref("tekton/app:latest")
    for param in run["spec"]["params"]:
        if param["name"] == "image-reference":
            param["value"] = dest
    build_task = next(t for t in pipeline["spec"]["tasks"]
                      if t["taskRef"]["name"] == task["metadata"]["name"])
    strings, arrays = pipeline_task_params(run, pipeline, build_task["name"])
    for param in task["spec"]["params"]:
        if param.get("type") == "array":
            arrays.setdefault(param["name"], param.get("default", []))
        else:
            strings.setdefault(param["name"], param.get("default"))

    # The source workspace, as git-clone leaves it; credentials, results, home.
    source = write_tree(tmp_path / "source", {"Dockerfile": (
        f"FROM {debian_python_base}\nARG VERSION\n"
        "RUN echo \"version $VERSION\" > /version && nproc > /nproc\n")})
    docker_config = tmp_path / "dockerconfig"
    docker_config.mkdir()
    (docker_config / "config.json").write_text(json.dumps({"auths": {}}))
    results = tmp_path / "results"
    results.mkdir()
    variables = {f"params.{name}": value for name, value in strings.items()}
    variables["workspaces.source.path"] = f"{WORKSPACE_ROOT}/source"
    for result in task["spec"]["results"]:
        variables[f"results.{result['name']}.path"] = f"{RESULTS_DIR}/{result['name']}"
    mount_path = next(w["mountPath"] for w in task["spec"]["workspaces"]
                      if w["name"] == "dockerconfig")
    binds = [Bind(source, f"{WORKSPACE_ROOT}/source"),
             Bind(docker_config, mount_path, readonly=True),
             Bind(results, RESULTS_DIR)]

    for index, step in enumerate(task["spec"]["steps"]):
        if "script" in step:
            argv = ["sh", "-c", substitute(step["script"], variables)]
        else:
            argv = (substitute_list(step.get("command", []), variables, arrays)
                    + substitute_list(step.get("args", []), variables, arrays))
        env = {e["name"]: substitute(e["value"], variables) for e in step.get("env", [])}
        uid = step.get("securityContext", {}).get("runAsUser", 0)
        result = run_step(
            tmp_path / f"bundle-{index}", kanipy_image.rootfs,
            RuncStep(args=argv, env={"HOME": "/tekton/home", **env}, binds=binds,
                     cwd=substitute(step.get("workingDir", "/"), variables), uid=uid),
            name=container_name(f"tekton-{index}"))
        assert result.returncode == 0, f"step {step['name']}: {result.stderr[-3000:]}"

    digest = (results / "IMAGE_DIGEST").read_text()
    assert (results / "IMAGE_URL").read_text() == dest
    manifest = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                               f"docker://{dest}"], capture_output=True, check=True).stdout
    assert digest == "sha256:" + hashlib.sha256(manifest).hexdigest()
    built = unpack_image(dest, tmp_path / "built")
    assert (built / "version").read_text() == "version 1.0\n"


def readme_yaml(heading: str) -> dict[str, Any]:
    """The first ```yaml block after ``heading`` in the README, parsed."""
    text = (REPO / "README.md").read_text()
    after = text[text.index(heading):]
    block = after[after.index("```yaml\n") + len("```yaml\n"):]
    path = Path(tempfile.mkdtemp()) / "snippet.yaml"
    try:
        path.write_text(block[:block.index("```")])
        return load_yaml(path)
    finally:
        shutil.rmtree(path.parent)


def _run_ci_job(tmp_path: Path, kanipy_image: KanipyImage, script: str, workspace: str,
                env: dict[str, str], name: str) -> None:
    """A job's shell script in kanipy's image, as a CI runner starts a job container."""
    source = write_tree(tmp_path / "source", {"Dockerfile": (
        "FROM {base}\nRUN echo built-in-ci > /ci && test -c /dev/null\n")})
    (source / "Dockerfile").write_text(
        (source / "Dockerfile").read_text().format(base=env.pop("BASE")))
    result = run_step(tmp_path / "bundle", kanipy_image.rootfs, RuncStep(
        args=["sh", "-e", "-c", script], env=env, binds=[Bind(source, workspace)],
        cwd=workspace), name=container_name(name))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RUN steps run unprivileged" in result.stderr


def test_readme_gitlab_job_runs_as_gitlab_runs_it(
        tmp_path: Path, registry: Registry, debian_python_base: str,
        kanipy_image: KanipyImage) -> None:
    job = readme_yaml("### GitLab CI")["build-image"]
    assert job["image"]["entrypoint"] == [""]
    # GitLab's Docker executor: the job's lines in one shell, in the project
    # directory, as the image's user (root), with Docker's default rights.
    project = "/builds/group/app"
    _run_ci_job(tmp_path, kanipy_image, "\n".join(job["script"]), project, {
        "BASE": debian_python_base, "CI_PROJECT_DIR": project, "CI_REGISTRY": registry.host,
        "CI_REGISTRY_IMAGE": registry.ref("group/app"), "CI_COMMIT_SHORT_SHA": "1a2b3c4d",
        "CI_REGISTRY_USER": "gitlab-ci-token", "CI_REGISTRY_PASSWORD": "job-token",
    }, "gitlab")
    built = unpack_image(registry.ref("group/app:1a2b3c4d"), tmp_path / "built")
    assert (built / "ci").read_text() == "built-in-ci\n"


def test_readme_github_actions_job_runs_as_github_runs_it(
        tmp_path: Path, registry: Registry, debian_python_base: str,
        kanipy_image: KanipyImage) -> None:
    job = readme_yaml("### GitHub Actions")["jobs"]["image"]
    assert job["container"]["options"] == "--user 0"
    step = next(s for s in job["steps"] if "run" in s)
    # Actions evaluates ${{ }} before the shell runs the step (sh -e for a container job).
    expressions = {"secrets.REGISTRY_AUTH": "dXNlcjpwYXNz", "github.repository": "org/app",
                   "github.sha": "0123abcd"}
    script = re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}", lambda m: expressions[m.group(1)], step["run"])
    env = {k: re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}", lambda m: expressions[m.group(1)], v)
           for k, v in {**job["env"], **step["env"]}.items()}
    env["REGISTRY"] = registry.host  # the job's registry, here the test's
    workspace = "/__w/app/app"
    _run_ci_job(tmp_path, kanipy_image, script, workspace, {
        "BASE": debian_python_base, "GITHUB_WORKSPACE": workspace, **env}, "github")
    built = unpack_image(registry.ref("org/app:0123abcd"), tmp_path / "built")
    assert (built / "ci").read_text() == "built-in-ci\n"
