"""GlobMatcher remembers where its DFA stands after each directory prefix (issue 14).

A matcher that has answered many questions must answer every one as a fresh matcher
does: random patterns and paths over a small alphabet (so prefixes repeat and ``**``,
classes and parents matter), asked in a shuffled order, with and without parents, and
past the point where the remembered prefixes are dropped.
"""

from __future__ import annotations

import random

import pytest

from kanipy.dockerfile import ignore
from kanipy.dockerfile.ignore import DockerIgnore, GlobMatcher

PIECES = ["a", "b", "/", "*", "?", "**", "**/", "[ab]", "[!a]", "\\*"]
NAMES = ["a", "b", "ab", "ba", "*", "aa", "a*b"]


def _pattern(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randrange(1, 7)))


def _path(rng: random.Random) -> str:
    return "/".join(rng.choice(NAMES) for _ in range(rng.randrange(1, 6)))


@pytest.mark.parametrize("max_states", [10_000, 4], ids=["states-kept", "states-dropped"])
@pytest.mark.parametrize("seed", range(8))
def test_a_used_matcher_answers_as_a_fresh_one(seed: int, max_states: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With few DFA states allowed, the matcher starts afresh often: what it remembered
    about prefixes names states that are gone and must go with them."""
    monkeypatch.setattr(ignore, "_MAX_STATES", max_states)
    rng = random.Random(seed)
    for _ in range(40):
        text = _pattern(rng)
        try:
            warm = GlobMatcher(text)
        except ValueError:
            continue
        questions = [(_path(rng), rng.random() < 0.5) for _ in range(150)]
        questions += questions[:50]  # asked again: answered from remembered prefixes
        rng.shuffle(questions)
        for path, parents in questions:
            fresh = GlobMatcher(text)
            if parents:
                assert warm.matches_or_parent(path) == fresh.matches_or_parent(path), \
                    (text, path)
            else:
                assert warm.matches(path) == fresh.matches(path), (text, path)


def test_answers_hold_when_remembered_prefixes_are_dropped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ignore, "_MAX_DIRS", 3)
    rules = DockerIgnore(["**/b", "a/*/a", "!a/b/b"])
    fresh_answers = {}
    paths = [f"{x}/{y}/{z}" for x in "ab" for y in "ab" for z in "ab"] * 3
    for path in paths:
        fresh_answers[path] = DockerIgnore(["**/b", "a/*/a", "!a/b/b"]).excludes(path)
    for path in paths:
        assert rules.excludes(path) == fresh_answers[path], path
    assert fresh_answers["a/a/a"] and fresh_answers["b/a/b"] and not fresh_answers["a/b/b"]
