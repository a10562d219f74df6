"""open_decompressed: every format, named or recognised by content, and what corrupt data gives."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
from collections.abc import Callable

import pytest
import zstandard

from kanipy.errors import IntegrityError
from kanipy.fs.compression import detect_compression, open_decompressed, open_decompressed_file

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit: more than one read

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, mtime=0),
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
    "none": lambda data: data,
}
FORMATS = list(COMPRESSORS)


def read_all(reader: object, chunk: int = 4096) -> bytes:
    out = bytearray()
    while data := reader.read(chunk):  # type: ignore[attr-defined]
        assert len(data) <= chunk
        out += data
    return bytes(out)


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMATS)
@pytest.mark.parametrize("named", [True, False], ids=["named", "detected"])
def test_every_format_named_or_detected(fmt: str, named: bool) -> None:
    blob = COMPRESSORS[fmt](PAYLOAD)
    reader = open_decompressed(io.BytesIO(blob), fmt if named else "auto", "test")
    assert read_all(reader) == PAYLOAD


@pytest.mark.parametrize("fmt", ["gzip", "bzip2", "xz", "zstd"], ids=str)
def test_concatenated_members_and_trailing_padding(fmt: str) -> None:
    compress = COMPRESSORS[fmt]
    blob = compress(b"first ") + compress(b"second")
    if fmt in ("gzip", "bzip2", "xz"):
        blob += bytes(512)  # tar writers pad to a block; gzip(1) ignores it too
    assert read_all(open_decompressed(io.BytesIO(blob), "auto", "t")) == b"first second"


@pytest.mark.parametrize("fmt", ["gzip", "bzip2", "xz"], ids=str)
def test_truncated_stream_is_an_integrity_error(fmt: str) -> None:
    blob = COMPRESSORS[fmt](PAYLOAD)
    with pytest.raises(IntegrityError, match=f"layer x: {fmt} stream is truncated"):
        read_all(open_decompressed(io.BytesIO(blob[: len(blob) // 2]), fmt, "layer x"))


@pytest.mark.parametrize("fmt", ["gzip", "bzip2", "xz", "zstd"], ids=str)
def test_corrupt_data_is_an_integrity_error(fmt: str) -> None:
    blob = bytearray(COMPRESSORS[fmt](PAYLOAD))
    for i in range(20, min(len(blob), 400)):
        blob[i] ^= 0x55
    with pytest.raises(IntegrityError, match="layer x: (corrupt|.*truncated)"):
        read_all(open_decompressed(io.BytesIO(bytes(blob)), fmt, "layer x"))


@pytest.mark.parametrize(("head", "expected"), [
    (b"\x1f\x8b\x08\x00", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh91AY&SY", "bzip2"),
    (b"BZh9\x17rE8P\x90", "bzip2"),   # an empty bzip2 stream
    (b"BZh_notes.", "none"),          # a plain tar whose first name starts with BZh
    (b"BZh91AY&Sx", "none"),
    (b"ustar\x00", "none"),
    (b"", "none"),
], ids=["gzip", "zstd", "xz", "bzip2", "bzip2-empty", "tar-named-BZh", "not-a-block",
        "other", "empty"])
def test_detection_by_magic(head: bytes, expected: str) -> None:
    assert detect_compression(head) == expected


def test_a_plain_tar_named_like_bzip2_stays_a_tar() -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("BZh9 notes.txt")
        tar.addfile(info, io.BytesIO(b""))
    reader = open_decompressed(io.BytesIO(raw.getvalue()), "auto", "t")
    assert read_all(reader) == raw.getvalue()


def test_file_wrapper_closes_the_source() -> None:
    source = io.BytesIO(gzip.compress(b"data"))
    with open_decompressed_file(source, "gzip", "t") as stream:  # type: ignore[arg-type]
        assert stream.read() == b"data"
    assert source.closed


def test_unknown_compression_is_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown compression"):
        open_decompressed(io.BytesIO(b""), "lz4", "t")
