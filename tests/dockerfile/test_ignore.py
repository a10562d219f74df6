""".dockerignore: Docker's matcher (moby/patternmatcher) and file selection
(Dockerfile reference, ".dockerignore file")."""

from __future__ import annotations

import itertools
import posixpath
import re
from pathlib import Path

import pytest

from kanipy.dockerfile.ignore import DockerIgnore, GlobMatcher, load_ignore
from kanipy.errors import ContextError

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
    ("double-star-repeated", "**/**/**/x", "a/b/x", True),
    ("double-star-repeated-zero-depth", "**/**/**/x", "x", True),
    ("double-star-repeated-not-prefix", "**/**/x", "ax", False),
    ("double-star-mid-name", "a**b", "ab", True),  # "**" is (.*/)?: no "/", nothing between
    ("double-star-mid-name-dirs", "a**b", "a/x/b", True),
    ("double-star-mid-name-no-slash", "a**b", "axb", False),
    ("double-star-tail", "foo/**", "foo/a/b", True),
    ("double-star-tail-dir-itself", "foo/**", "foo", False),
    ("double-star-alone", "**", "any/thing", True),
    ("double-star-inside", "a/**/c", "a/c", True),
    ("double-star-inside-deep", "a/**/c", "a/x/y/c/d", True),
    ("parent-matches-through-star", "*/build", "src/build/out/x.o", True),
    ("star-star-star", "a/***/b", "a/x/y/b", True),
    ("class-after-double-star", "**/[ab].txt", "x/y/b.txt", True),
    ("escaped-bracket", "\\[x]", "[x]", True),
    ("trailing-backslash", "a\\", "a\\", True),
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


def test_a_file_re_included_through_a_class_is_walked_to() -> None:
    """"[^a]" matches "/", so the exception re-includes build/keep.txt: the walk must
    enter build/, or that file silently leaves the context."""
    rules = DockerIgnore.from_text("build\n!build[^a]keep.txt")
    assert rules.excludes("build") and not rules.excludes("build/keep.txt")
    assert rules.must_walk("build")


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


def reference_regex(pattern: str) -> str:
    """patternmatcher's translation to a regular expression, as kanipy had it before
    issue 11: the meaning the linear matcher must keep (too slow to run on its own)."""
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 1
                if i + 1 < n and pattern[i + 1] == "/":
                    i += 1
                out.append(".*" if i + 1 >= n else "(.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            if i + 1 < n:
                i += 1
                out.append(re.escape(pattern[i]))
            else:
                out.append("\\\\")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out) + "$"


PATTERNS = ["*", "?", "a*", "*a", "a?c", "**", "**/a", "a/**", "a/**/b", "**/*.go", "*/x*",
            "a**b", "**/**/b", "[ab]*", "[!a]/b", "a\\*", "*/*/*", "?/**/?", "**/a*b/**",
            "a*b*c", ".*", "a/*/", "**/[!x]?"]
PATHS = ["a", "b", "ab", "a/b", "ab/c", "a/x/b", "x.go", "d/e/f.go", "a*", "a/b/c",
         "abc", "aXbYc", ".hidden", "a/c/b", "b/a", "x/y", "xa/b", "a/ab/b/c", "/", "a//b"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_linear_matcher_means_what_the_regex_means(pattern: str) -> None:
    regex = re.compile(reference_regex(pattern), re.DOTALL)
    matcher = GlobMatcher(pattern)
    for path in PATHS:
        assert matcher.matches(path) is (regex.match(path) is not None), path
        if posixpath.normpath(path) != path:
            continue  # DockerIgnore cleans a path before it asks about its parents
        prefixes = [path] + [path[:i] for i, ch in enumerate(path) if ch == "/"]
        either = any(regex.match(p) is not None for p in prefixes)
        assert matcher.matches_or_parent(path) is either, path


def test_generated_patterns_agree_with_the_regex() -> None:
    """Every pattern of up to four pieces from an alphabet of glob syntax."""
    alphabet = ["a", "/", "*", "**", "?", "[ab]"]
    paths = ["", "a", "b", "aa", "a/a", "a/b", "b/a", "ab/a", "a/a/a", "aa/b/ab", "/a", "a/"]
    checked = 0
    for size in range(1, 5):
        for combo in itertools.product(alphabet, repeat=size):
            pattern = "".join(combo)
            regex = re.compile(reference_regex(pattern), re.DOTALL)
            matcher = GlobMatcher(pattern)
            for path in paths:
                assert matcher.matches(path) is (regex.match(path) is not None), (pattern, path)
                checked += 1
    assert checked > 10_000


# Each pattern against a path it fails to match only after trying every way to split it:
# Python's backtracking took 43 s for 8 "**" against a 40-deep path, hours for 12.
PATHOLOGICAL = [
    # (pattern, a path it fails to match, a path it matches)
    ("/".join(["**"] * 12) + "/x", "/".join(["d"] * 200), "/".join(["d"] * 200) + "/x"),
    ("/".join(["**"] * 40) + "/x", "/".join(["d"] * 200), "/".join(["d"] * 200) + "/x"),
    ("*a" * 10 + "b", "a" * 250, "a" * 250 + "b"),
    ("**/x*" * 8 + "y", "/".join(["xx"] * 200), "/".join(["xx"] * 200) + "y"),
    ("a/" + "**/a*" * 10 + "z", "/".join(["a"] * 300), "/".join(["a"] * 300) + "z"),
]


@pytest.mark.parametrize(("pattern", "path", "matching"), PATHOLOGICAL,
                         ids=[f"pathological-{i}" for i in range(len(PATHOLOGICAL))])
def test_pathological_patterns_cost_work_linear_in_the_path(
        pattern: str, path: str, matching: str) -> None:
    ignore = DockerIgnore.from_text(pattern)
    # Would never finish with a backtracking matcher.
    assert ignore.excludes(path) is False
    assert ignore.excludes(path + "/deeper/still") is False
    assert ignore.excludes(matching) is True
    assert ignore.excludes(matching + "/child") is True
    # The work is counted, not timed: at most one DFA state is built per
    # character matched, and each character costs one step.
    matcher = ignore.patterns[0].matcher
    assert matcher.states_built <= 2 * len(matching) + 2


def test_unterminated_class_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("# comment\nnode_modules\n\n[abc\n")
    with pytest.raises(ContextError) as caught:
        load_ignore(tmp_path)
    assert str(caught.value).startswith(".dockerignore:4: invalid pattern '[abc': unterminated [")
    assert caught.value.exit_code == 2


def test_non_utf8_ignore_file_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_bytes(b"ok\nbad-\xff-name\n")
    with pytest.raises(ContextError, match=r"^\.dockerignore:2: not valid UTF-8 \(byte 0xff\)"):
        load_ignore(tmp_path)


def test_dockerfile_specific_ignore_file_errors_name_it(tmp_path: Path) -> None:
    (tmp_path / "app.Dockerfile.dockerignore").write_text("ok\n!x[\n")
    with pytest.raises(ContextError, match=r"^app\.Dockerfile\.dockerignore:2: invalid pattern "
                                           r"'!x\[': unterminated \["):
        load_ignore(tmp_path, tmp_path / "app.Dockerfile")


def test_ignore_file_leading_outside_the_context_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("[password-like line\n")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / ".dockerignore").symlink_to(secret)
    with pytest.raises(ContextError, match=r"^\.dockerignore leads outside the build context"
                       ) as caught:
        load_ignore(context)
    assert "password" not in str(caught.value)
    # Inside the context, a symlinked ignore file is read.
    (context / "real.ignore").write_text("a\n")
    (context / ".dockerignore").unlink()
    (context / ".dockerignore").symlink_to("real.ignore")
    assert load_ignore(context).excludes("a")
