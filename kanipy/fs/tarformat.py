"""The tar format's constants, shared by our reader and writer (POSIX pax/ustar, GNU)."""

from __future__ import annotations

BLOCK = 512

REGTYPE = b"0"
AREGTYPE = b"\0"
LNKTYPE = b"1"
SYMTYPE = b"2"
CHRTYPE = b"3"
BLKTYPE = b"4"
DIRTYPE = b"5"
FIFOTYPE = b"6"
CONTTYPE = b"7"
XHDTYPE = b"x"
XGLTYPE = b"g"
