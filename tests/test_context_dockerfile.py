"""The Dockerfile a context names stays inside the context (issue 11)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kanipy.context.dockerfile import dockerfile_in_context
from kanipy.errors import ContextError


@pytest.fixture()
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """tmp/outside/secret and tmp/ctx (the context), with a Dockerfile in ctx/docker."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("TOPSECRET hunter2\n")
    (outside / "Dockerfile").write_text("FROM scratch\n")
    context = tmp_path / "ctx"
    (context / "docker").mkdir(parents=True)
    (context / "docker/Dockerfile.prod").write_text("FROM scratch\n")
    return context, outside


@pytest.mark.parametrize(("link", "target"), [
    ("Dockerfile", "../outside/secret"),
    ("Dockerfile", "{outside}/secret"),
    ("docker/Dockerfile", "../../outside/secret"),
], ids=["relative-link-out", "absolute-link-out", "nested-link-out"])
def test_symlink_leading_out_is_refused(layout: tuple[Path, Path], link: str,
                                        target: str) -> None:
    context, outside = layout
    (context / link).symlink_to(target.format(outside=outside))
    with pytest.raises(ContextError) as caught:
        dockerfile_in_context(context, context / link)
    message = str(caught.value)
    assert message.startswith(f"Dockerfile {link!r} is a symlink leading outside the build "
                              f"context (to {outside / 'secret'})")
    assert "TOPSECRET" not in message
    assert caught.value.exit_code == 2


def test_directory_symlink_leading_out_is_refused(layout: tuple[Path, Path]) -> None:
    context, outside = layout
    (context / "up").symlink_to(outside)
    with pytest.raises(ContextError, match="'up/Dockerfile' is a symlink leading outside"):
        dockerfile_in_context(context, context / "up/Dockerfile")


def test_symlinks_inside_the_context_are_followed(layout: tuple[Path, Path]) -> None:
    context, _ = layout
    (context / "Dockerfile").symlink_to("docker/Dockerfile.prod")
    (context / "abs").symlink_to(context / "docker/Dockerfile.prod")
    real = context / "docker/Dockerfile.prod"
    assert dockerfile_in_context(context, context / "Dockerfile") == real
    assert dockerfile_in_context(context, context / "abs") == real
    assert dockerfile_in_context(context, real) == real


def test_a_dockerfile_the_user_names_outside_the_context_is_read(
        layout: tuple[Path, Path]) -> None:
    context, outside = layout
    named = outside / "Dockerfile"
    assert dockerfile_in_context(context, named) == named
    assert dockerfile_in_context(context, context / "../outside/Dockerfile") == named
