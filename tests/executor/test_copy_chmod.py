"""COPY --chmod: the mode a copied entry gets, octal or symbolic (Dockerfile 1.14+)."""

from __future__ import annotations

import pytest

from kanipy.executor.handlers.copy_tree import apply_chmod

CHMOD_CASES = [
    ("octal", "0755", 0o644, False, 0o755),
    ("u+x", "u+x", 0o644, False, 0o744),
    ("a-w", "a-w", 0o666, False, 0o444),
    ("go=", "go=", 0o755, False, 0o700),
    ("X-dir", "a+X", 0o644, True, 0o755),
    ("X-file", "a+X", 0o644, False, 0o644),
    ("multiple", "u=rwx,g=rx,o=", 0o000, False, 0o750),
]


@pytest.mark.parametrize(("spec", "mode", "is_dir", "expected"), [c[1:] for c in CHMOD_CASES],
                         ids=[c[0] for c in CHMOD_CASES])
def test_apply_chmod(spec: str, mode: int, is_dir: bool, expected: int) -> None:
    assert apply_chmod(spec, mode, is_dir) == expected
