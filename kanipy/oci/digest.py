"""Content digests (``algorithm:hex``), and hashing while bytes stream past.

OCI image spec, "Digests": the algorithm is ``sha256`` or ``sha512``, the
encoded part lowercase hex of the matching length.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import BinaryIO

from kanipy.errors import IntegrityError

_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")


@dataclass(frozen=True, order=True)
class Digest:
    """A content digest such as ``sha256:e3b0...``."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        match = _DIGEST_RE.match(text)
        if not match:
            raise ValueError(f"invalid digest {text!r}: expected ALGORITHM:HEX")
        algorithm, encoded = match.groups()
        want = _HEX_LENGTH.get(algorithm)
        if want is None:
            raise ValueError(f"invalid digest {text!r}: unsupported algorithm {algorithm!r}")
        if len(encoded) != want or not re.fullmatch(r"[0-9a-f]+", encoded):
            raise ValueError(
                f"invalid digest {text!r}: {algorithm} needs {want} lowercase hex characters"
            )
        return cls(algorithm, encoded)

    @classmethod
    def of_bytes(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def new_hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def short(self) -> str:
        """The first 12 hex characters, as Docker shows image ids."""
        return self.hex[:12]


def sha256_of(data: bytes) -> Digest:
    return Digest.of_bytes(data)


class HashingWriter:
    """A write-only file object that hashes and counts what passes into ``target``.

    ``target`` may be None to only hash. Chain several to get the digest of the
    uncompressed stream and of the compressed one in a single pass.
    """

    def __init__(self, target: BinaryIO | HashingWriter | None, algorithm: str = "sha256"):
        self._target = target
        self._hasher = hashlib.new(algorithm)
        self._algorithm = algorithm
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._hasher.update(data)
        self.size += len(data)
        if self._target is not None:
            self._target.write(data)
        return len(data)

    def flush(self) -> None:
        if self._target is not None:
            self._target.flush()

    @property
    def digest(self) -> Digest:
        return Digest(self._algorithm, self._hasher.hexdigest())


class VerifyingReader:
    """Wraps a readable stream; at EOF checks the size and digest of what was read.

    Raises IntegrityError naming ``what`` on a mismatch, so a corrupt download is
    never mistaken for a complete one.
    """

    def __init__(self, source: BinaryIO, expected: Digest, size: int | None, what: str):
        self._source = source
        self._expected = expected
        self._size = size
        self._what = what
        self._hasher = expected.new_hasher()
        self.read_bytes = 0
        self._checked = False

    def read(self, n: int = -1) -> bytes:
        data = self._source.read(n)
        if data:
            self._hasher.update(data)
            self.read_bytes += len(data)
            if self._size is not None and self.read_bytes > self._size:
                raise IntegrityError(
                    f"{self._what}: received more than the {self._size} bytes declared"
                )
        elif n != 0:
            self.check()
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Close the source; a stream closed before EOF is simply not checked."""
        self._source.close()

    def __enter__(self) -> VerifyingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self) -> None:
        if self._checked:
            return
        self._checked = True
        if self._size is not None and self.read_bytes != self._size:
            raise IntegrityError(
                f"{self._what}: size mismatch, expected {self._size} bytes, got {self.read_bytes}"
            )
        actual = Digest(self._expected.algorithm, self._hasher.hexdigest())
        if actual != self._expected:
            raise IntegrityError(
                f"{self._what}: digest mismatch, expected {self._expected}, got {actual}"
            )
