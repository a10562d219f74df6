"""Word expansion: BuildKit's shell lexer rules (frontend/dockerfile/shell, and the
Dockerfile reference section "Environment replacement")."""

from __future__ import annotations

import pytest

from kanipy.dockerfile.lex import ExpansionError, ShellLexer

ENV = {"V": "value", "EMPTY": "", "P": "a/b/c.tar.gz", "SP": "a b", "HOME": "/root"}

WORD_CASES = [
    ("plain", "$V", "value"),
    ("braces", "${V}x", "valuex"),
    ("unset-is-empty", "[$NOPE]", "[]"),
    ("dollar-alone", "a$", "a$"),
    ("dollar-nonname", "$-x", "x"),
    ("default-unset", "${NOPE:-w}", "w"),
    ("default-empty-colon", "${EMPTY:-w}", "w"),
    ("default-empty-nocolon", "${EMPTY-w}", ""),
    ("default-set", "${V:-w}", "value"),
    ("alt-set", "${V:+w}", "w"),
    ("alt-empty-colon", "${EMPTY:+w}", ""),
    ("alt-empty-nocolon", "${EMPTY+w}", "w"),
    ("alt-unset", "${NOPE+w}", ""),
    ("required-set", "${V:?boom}", "value"),
    ("prefix-short", "${P#*/}", "b/c.tar.gz"),
    ("prefix-long", "${P##*/}", "c.tar.gz"),
    ("suffix-short", "${P%.*}", "a/b/c.tar"),
    ("suffix-long", "${P%%.*}", "a/b/c"),
    ("prefix-nomatch", "${P#x}", "a/b/c.tar.gz"),
    ("replace-first", "${P/\\//_}", "a_b/c.tar.gz"),
    ("replace-all", "${P//\\//_}", "a_b_c_tar_gz".replace("_tar_gz", ".tar.gz")),
    ("replace-glob", "${V/a*u/X}", "vXe"),
    ("single-quotes-literal", "'$V \\n'", "$V \\n"),
    ("double-quotes-expand", '"$V"', "value"),
    ("double-quote-escapes", '"\\$V \\" \\\\ \\a"', '$V " \\ \\a'),
    ("escape-outside", "\\$V", "$V"),
    ("escape-any-char", "a\\ b", "a b"),
    ("trailing-escape-dropped", "ab\\", "ab"),
    ("default-with-quotes", '${NOPE:-"a b"}', "a b"),
    ("nested-default", "${NOPE:-${V}}", "value"),
    ("spaces-kept", "a  b", "a  b"),
]


@pytest.mark.parametrize(("word", "expected"), [c[1:] for c in WORD_CASES],
                         ids=[c[0] for c in WORD_CASES])
def test_process_word(word: str, expected: str) -> None:
    assert ShellLexer().process_word(word, ENV) == expected


WORDS_CASES = [
    ("unquoted-var-splits", "$SP c", ["a", "b", "c"]),
    ("quoted-var-one-word", '"$SP" c', ["a b", "c"]),
    ("empty-quotes-dropped", '"" x', ["x"]),
]


@pytest.mark.parametrize(("word", "expected"), [c[1:] for c in WORDS_CASES],
                         ids=[c[0] for c in WORDS_CASES])
def test_process_words(word: str, expected: list[str]) -> None:
    assert ShellLexer().process_words(word, ENV) == expected


ERROR_CASES = [
    ("required-unset-msg", "${NOPE:?you must set it}", "NOPE: you must set it"),
    ("required-unset-default", "${NOPE?}", "NOPE: is not allowed to be unset"),
    ("required-empty", "${EMPTY:?}", "EMPTY: is not allowed to be empty"),
    ("missing-brace", "${V", "missing '}'"),
    ("bad-substitution", "${}", "bad substitution"),
    ("bad-modifier", "${V:#x}", "unsupported modifier"),
    ("unterminated-single", "'abc", "single-quote"),
    ("unterminated-double", '"abc', "double-quote"),
]


@pytest.mark.parametrize(("word", "message"), [c[1:] for c in ERROR_CASES],
                         ids=[c[0] for c in ERROR_CASES])
def test_expansion_errors(word: str, message: str) -> None:
    with pytest.raises(ExpansionError, match=message.replace("$", r"\$")):
        ShellLexer().process_word(word, ENV)


def test_backtick_escape_keeps_windows_paths() -> None:
    # Dockerfile reference, "escape": with `# escape=`` backslashes are ordinary characters.
    lexer = ShellLexer("`")
    assert lexer.process_word("C:\\Users\\$NAME\\`$x", {"NAME": "bob"}) == "C:\\Users\\bob\\$x"


def test_heredoc_body_keeps_quotes() -> None:
    body = 'echo "$V" \'$V\' \\$V\n'
    assert ShellLexer().process_heredoc(body, ENV) == "echo \"value\" 'value' $V\n"
