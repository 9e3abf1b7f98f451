"""The Docker driver's log lines from the engine's multiplexed frames (runtime/docker/log_stream.py `_payloads`,
driver.py `_lines`), without an engine: the frames as the json-file log sends them back."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from sysops.runtime.docker.driver import _lines
from sysops.runtime.docker.log_stream import _payloads

STDOUT, STDERR = 1, 2
#: The pieces the driver cuts a long line into (log_stream.LINE_PIECE_BYTES).
LINE_PIECE_BYTES = 64 << 10
#: The engine keeps a line in log entries of at most this many bytes (its copier's buffer).
ENTRY_BYTES = 16 << 10


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + struct.pack(">I", len(payload)) + payload


def entries(stream: int, line: bytes) -> list[bytes]:
    """A line as the engine logs it: entries of ENTRY_BYTES, the last one ended by the newline."""
    return [frame(stream, line[at : at + ENTRY_BYTES]) for at in range(0, len(line), ENTRY_BYTES)]


def lines_of(log: bytes, block: int) -> list[str]:
    blocks: Iterator[bytes] = iter([log[at : at + block] for at in range(0, len(log), block)])
    return list(_lines(_payloads(blocks)))


@pytest.mark.parametrize("block", [7, 1000, ENTRY_BYTES + 5, 1 << 20])
def test_a_line_of_the_other_stream_between_the_entries_of_a_long_line_stays_apart(block: int) -> None:
    """Seen under load in CI: stderr's "line 59999" logged between the 16 KiB entries of a 70,000-byte stdout
    line; joined in the engine's order it made one line "L...Lline 59999 ..." and a piece of L's."""
    long = entries(STDOUT, b"L" * 70000 + b"\n")
    log = frame(STDOUT, b"first\n") + b"".join(long[:2]) + frame(STDERR, b"line 59999 x\n") + b"".join(long[2:])
    log += frame(STDOUT, b"last\n")
    assert lines_of(log, block) == ["first", "line 59999 x", "L" * LINE_PIECE_BYTES, "L" * (70000 - 65536), "last"]


@pytest.mark.parametrize("block", [1000, 1 << 20])
def test_a_long_line_is_cut_as_before_and_the_other_stream_goes_on(block: int) -> None:
    """Pieces of LINE_PIECE_BYTES go as soon as they are whole (what is held stays bounded); a stream's last
    output without a newline comes at the end, apart from the other's."""
    line = entries(STDOUT, b"y" * (3 * LINE_PIECE_BYTES + 10) + b"\n")
    log = b"".join(line[:-1]) + frame(STDERR, b"meanwhile\n") + line[-1]
    log += frame(STDERR, b"no end on stderr") + frame(STDOUT, b"no end on stdout")
    piece = "y" * LINE_PIECE_BYTES
    assert lines_of(log, block) == [piece, piece, "meanwhile", piece, "y" * 10, "no end on stderr", "no end on stdout"]


def test_whole_lines_keep_the_engines_order() -> None:
    log = b"".join(frame(STDERR if n % 3 == 0 else STDOUT, f"line {n}\n".encode()) for n in range(5000))
    assert lines_of(log, 4096) == [f"line {n}" for n in range(5000)]
