"""Docker/BuildKit behaviours of issue 12, end to end on the real registry, the result
read back with skopeo and umoci.

Each test is written from the documented behaviour: Docker's "Build variables" page
(ARG inheritance between stages), BuildKit's COPY with a wildcard that matches nothing,
the supplementary groups a RUN gets under USER, and the owner of a WORKDIR made under a
numeric USER.
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.helpers import build, lstat_info, skopeo_config, unpack_image, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry


def test_a_child_stage_inherits_the_args_of_its_parent_stage(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    dockerfile = (
        f"FROM {base_images.oci} AS parent\n"
        "ARG VERSION=1.2\n"
        "ARG FROMBUILD\n"
        "FROM parent AS child\n"
        'RUN echo "inherited=$VERSION build=$FROMBUILD" > /child-run\n'
        "ARG VERSION\n"
        'RUN echo "bare=$VERSION" > /child-bare\n'
        'ARG VERSION="$VERSION-dev"\n'
        'RUN echo "extended=$VERSION" > /child-extended\n'
        "LABEL version=$VERSION\n"
        "FROM child\n"
        "LABEL grandchild=$VERSION\n"
    )
    context = write_tree(tmp_path / "ctx", {"Dockerfile": dockerfile})
    dest = registry.ref("e2e/docker4-args:latest")
    build(context, "-d", dest, "--build-arg", "FROMBUILD=b").check()
    rootfs = unpack_image(dest, tmp_path / "out")
    assert (rootfs / "child-run").read_text() == "inherited=1.2 build=b\n"
    assert (rootfs / "child-bare").read_text() == "bare=1.2\n"
    assert (rootfs / "child-extended").read_text() == "extended=1.2-dev\n"
    config = skopeo_config(dest)["config"]
    assert config["Labels"]["version"] == "1.2-dev"
    assert config["Labels"]["grandchild"] == "1.2-dev", "inherited through two stages"
    assert not any(e.startswith(("VERSION=", "FROMBUILD=")) for e in config.get("Env", [])), \
        "ARG values never reach the image's Env"
    dry = build(context, "--dry-run", "--no-push", "--build-arg", "FROMBUILD=b").check()
    assert 'LABEL version="1.2-dev"' in dry.stdout + dry.stderr, "planning agrees"


def test_a_wildcard_that_matches_nothing_copies_nothing(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {
        "app.txt": "app\n",
        "Dockerfile": (
            f"FROM {base_images.oci} AS src\n"
            f"FROM {base_images.oci}\n"
            # One source matches, one wildcard matches nothing: the match is copied.
            "COPY app.txt optional*.env /mixed/\n"
            # Only wildcards that match nothing: no error, and BuildKit's file operation
            # returns before copying, so not even the destination is made.
            "COPY nothing*.txt missing?/ /empty/\n"
            "COPY --from=src /nope/*.so /libs/\n"
        ),
    })
    dest = registry.ref("e2e/docker4-wildcard:latest")
    build(context, "-d", dest).check()
    rootfs = unpack_image(dest, tmp_path / "out")
    assert sorted(p.name for p in (rootfs / "mixed").iterdir()) == ["app.txt"]
    assert not (rootfs / "empty").exists()
    assert not (rootfs / "libs").exists()
    # A source named without a wildcard must still exist.
    (context / "Dockerfile").write_text(f"FROM {base_images.oci}\nCOPY app.txt gone.txt /d/\n")
    failed = build(context, "--no-push")
    assert failed.returncode == 1, failed.stderr
    assert "'gone.txt' not found in the build context" in failed.stderr


def test_run_gets_the_primary_and_supplementary_groups_as_under_buildkit(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    # BuildKit resolves USER with moby/sys/user's GetExecUser (supplementary groups from
    # /etc/group by member name, none when a group is given) and then puts the primary
    # gid first in the process's groups (executor/oci/user.go, ensureAdditionalGids);
    # its own test (testUserAdditionalGids) expects ``USER 1234:1234`` to print
    # ``groups=1234`` and ``USER 1234`` ``groups=0(root)``.
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        "RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd "
        "&& printf 'app:x:1000:\\nextra:x:2000:app\\ntools:x:3000:nobody,app\\n' "
        ">> /etc/group\n"
        "RUN id > /tmp/id-root\n"
        "USER app\n"
        "RUN id > /tmp/id-name\n"
        "USER 1000\n"
        "RUN id > /tmp/id-uid\n"
        "USER app:tools\n"
        "RUN id > /tmp/id-name-group\n"
        "USER 1234:1234\n"
        "RUN id > /tmp/id-numeric\n"
        "USER 4242\n"
        "RUN id > /tmp/id-unknown\n"
    )})
    dest = registry.ref("e2e/docker4-groups:latest")
    build(context, "-d", dest).check()
    out = unpack_image(dest, tmp_path / "out") / "tmp"
    ids = {p.name: p.read_text().strip() for p in out.iterdir()}
    assert ids == {
        "id-root": "uid=0(root) gid=0(root) groups=0(root)",
        "id-name": "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra),3000(tools)",
        "id-uid": "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra),3000(tools)",
        "id-name-group": "uid=1000(app) gid=3000(tools) groups=3000(tools)",
        "id-numeric": "uid=1234 gid=1234 groups=1234",
        "id-unknown": "uid=4242 gid=0(root) groups=0(root)",
    }


def test_workdir_under_a_numeric_user_without_passwd_entry_is_owned_uid_uid(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    # BuildKit makes WORKDIR with a file operation (llb.Mkdir + WithUser) whose owner
    # comes from readUser: a numeric uid without a group takes the uid as gid.
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        "USER 4242\n"
        "WORKDIR /srv/app\n"
        "USER 4343:77\n"
        "WORKDIR /srv/app/logs\n"
        "USER nobody\n"
        "WORKDIR /home/nobody\n"
    )})
    dest = registry.ref("e2e/docker4-workdir:latest")
    build(context, "-d", dest).check()
    rootfs = unpack_image(dest, tmp_path / "out")
    assert lstat_info(rootfs / "srv") == ("0o755", 4242, 4242), "parents too (MkdirAll)"
    assert lstat_info(rootfs / "srv/app") == ("0o755", 4242, 4242)
    assert lstat_info(rootfs / "srv/app/logs") == ("0o755", 4343, 77)
    assert lstat_info(rootfs / "home/nobody") == ("0o755", 65534, 65534)
    assert skopeo_config(dest)["config"]["WorkingDir"] == "/home/nobody"


def test_step_lines_show_the_instruction_as_written_and_no_build_arg_value(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    # Issue 12: ``--build-arg NPM_TOKEN=s3cr3t`` showed as ``ARG NPM_TOKEN=s3cr3t`` on the
    # step line and in the summary. Step lines show the Dockerfile's text, as buildah's
    # ``STEP n/m:`` lines do; the history keeps what Docker writes (RUN's ``|1 NAME=value``).
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        "ARG NPM_TOKEN\n"
        "ARG DIR=/srv\n"
        'RUN test -n "$NPM_TOKEN" && echo "$NPM_TOKEN" | wc -c > /ran\n'
        "WORKDIR $DIR/app\n"
    )})
    dest = registry.ref("e2e/docker4-log:latest")
    result = build(context, "-d", dest, "--build-arg", "NPM_TOKEN=s3cr3t").check()
    assert "s3cr3t" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.splitlines()
    for text in ("ARG NPM_TOKEN", 'RUN test -n "$NPM_TOKEN"', "WORKDIR $DIR/app"):
        assert any(line.rstrip().endswith(text) or f"{text} " in line for line in lines), \
            (text, result.stderr)
    assert not any("WORKDIR /srv/app" in line for line in lines), result.stderr
    assert (unpack_image(dest, tmp_path / "out") / "ran").read_text().strip() == "7", \
        "the step saw the value"
    config = skopeo_config(dest)
    assert config["config"]["WorkingDir"] == "/srv/app"
    runs = [h["created_by"] for h in config["history"] if "RUN" in h.get("created_by", "")]
    assert runs and runs[-1].startswith("RUN |2 DIR=/srv NPM_TOKEN=s3cr3t /bin/sh -c"), runs
