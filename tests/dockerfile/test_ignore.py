""".dockerignore: Docker's matcher (moby/patternmatcher) and file selection
(Dockerfile reference, ".dockerignore file")."""

from __future__ import annotations

from pathlib import Path

import pytest

from kanipy.dockerfile.ignore import DockerIgnore, load_ignore

CASES = [
    # (id, patterns, path, excluded)
    ("exact", "foo", "foo", True),
    ("excludes-children", "foo", "foo/bar/baz", True),
    ("anchored-at-root", "foo", "a/foo", False),
    ("leading-slash", "/foo", "foo/x", True),
    ("star-one-segment", "*/temp*", "a/temporary", True),
    ("star-not-deeper", "*/temp*", "a/b/temporary", False),
    ("double-star-any-depth", "**/*.go", "a/b/c.go", True),
    ("double-star-zero-depth", "**/*.go", "c.go", True),
    ("question-mark", "temp?", "temp1", True),
    ("question-no-slash", "a?b", "a/b", False),
    ("character-class", "file[0-9].txt", "file7.txt", True),
    ("negated-class", "file[!0-9].txt", "file7.txt", False),
    ("cleaned", "./a//b/../c", "a/c", True),
    ("comment-ignored", "# foo\n", "# foo", False),
    ("exception", "*.md\n!README.md", "README.md", False),
    ("exception-then-reexclude", "*.md\n!README*.md\nREADME-secret.md", "README-secret.md",
     True),
    ("last-match-wins", "!a\na", "a", True),
    ("exception-under-excluded-dir", "build\n!build/keep", "build/keep", False),
    ("exception-keeps-rest-excluded", "build\n!build/keep", "build/other", True),
    ("dot-pattern", ".git", ".git/config", True),
    ("trailing-slash-dir", "docs/", "docs/a.md", True),
    ("escaped-star", "a\\*b", "a*b", True),
    ("escaped-star-literal-only", "a\\*b", "axb", False),
    ("whitespace-trimmed", "  foo  ", "foo", True),
]


@pytest.mark.parametrize(("patterns", "path", "excluded"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_excludes(patterns: str, path: str, excluded: bool) -> None:
    assert DockerIgnore.from_text(patterns).excludes(path) is excluded


WALK_CASES = [
    ("not-excluded", "foo", "bar", True),
    ("excluded-no-exceptions", "node_modules", "node_modules", False),
    ("exception-inside", "build\n!build/keep/x", "build", True),
    ("exception-elsewhere", "build\n!dist/x", "build", False),
    ("exception-with-wildcard", "build\n!build/*/keep", "build/a", True),
    ("exception-double-star", "build\n!**/keep", "build/a/b", True),
    ("exception-other-subdir", "build\n!build/keep/x", "build/other", False),
]


@pytest.mark.parametrize(("patterns", "reldir", "walk"), [c[1:] for c in WALK_CASES],
                         ids=[c[0] for c in WALK_CASES])
def test_must_walk(patterns: str, reldir: str, walk: bool) -> None:
    assert DockerIgnore.from_text(patterns).must_walk(reldir) is walk


def test_dockerfile_specific_ignore_file_wins(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("a\n")
    sub = tmp_path / "docker"
    sub.mkdir()
    (sub / "app.Dockerfile").write_text("FROM x\n")
    (sub / "app.Dockerfile.dockerignore").write_text("b\n")
    specific = load_ignore(tmp_path, sub / "app.Dockerfile")
    assert specific.excludes("b") and not specific.excludes("a")
    general = load_ignore(tmp_path, tmp_path / "Dockerfile")
    assert general.excludes("a") and not general.excludes("b")
    assert not load_ignore(tmp_path / "docker").excludes("a")
