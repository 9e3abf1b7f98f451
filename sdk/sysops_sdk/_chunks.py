"""Large Invoke replies in pieces: the split on the sending side, the bounded reassembly on the receiving side.

gRPC refuses any message above its receive limit (4 MiB by default), so a command that returns a large
text or dict would otherwise fail as "did not answer" although the plugin is healthy. Since protocol
1.1 a long result or output line is sent as several `Result`/`OutputChunk` messages marked `continued`,
each at most `CHUNK_CHARS` characters, to callers that announce 1.1 or later; the receiver joins them
and refuses more than `MAX_REPLY_BYTES` in all, so a hostile plugin cannot exhaust the caller's memory.
The plugin server, the orchestrator's client and the control API (`sysops serve`) share this module.

Since protocol 1.4, to callers that announce 1.4 or later, streamed lines travel in batches: one
`OutputChunk` whose text is several lines joined by "\n" (a line never holds a newline: the server splits
what a command yields). A batch holds at most `BATCH_CHARS` characters; a longer line goes alone, in pieces
as above. An older caller that prints each chunk's text plus a newline still prints the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from sysops_sdk.protocol.v1 import plugin_pb2 as pb

#: Characters per piece: at most 4 MiB of UTF-8, so a piece always fits the transport's message limit.
CHUNK_CHARS = 1 << 20
#: Largest result (or single output line) a command may return, in bytes of UTF-8.
MAX_REPLY_BYTES = 64 << 20
MAX_REPLY_MIB = MAX_REPLY_BYTES >> 20
#: The gRPC message limit both sides configure: a piece plus its envelope, with room to spare.
MAX_MESSAGE_BYTES = 8 << 20
#: The first protocol version whose callers understand `continued`.
CHUNKED_SINCE = (1, 1)
#: The first protocol version whose callers take several lines in one OutputChunk.
BATCHED_SINCE = (1, 4)
#: Characters of lines (newlines included) in one batched OutputChunk at most.
BATCH_CHARS = 256 << 10


def _speaks(version: str, since: tuple[int, int]) -> bool:
    try:
        major, minor = (int(part) for part in version.split(".", 1))
    except ValueError:
        return False
    return (major, minor) >= since


def speaks_chunks(version: str) -> bool:
    """Say whether a peer announcing protocol `version` ("MAJOR.MINOR") joins continued pieces."""
    return _speaks(version, CHUNKED_SINCE)


def speaks_batches(version: str) -> bool:
    """Say whether a peer announcing protocol `version` takes several lines in one OutputChunk."""
    return _speaks(version, BATCHED_SINCE)


def utf8_size(text: str) -> int:
    """Bytes of `text` in UTF-8, without encoding it when its length alone decides the bound."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def too_large_message(size: int) -> str:
    """The one-line error of a reply over the cap."""
    return f"reply larger than {MAX_REPLY_MIB} MiB ({size / (1 << 20):.1f} MiB): return less, or write it to /data"


def _pieces(text: str, chunked: bool) -> Iterator[tuple[str, bool]]:
    """Slices of at most CHUNK_CHARS (the whole text unless `chunked`), one at a time, each with whether more follow."""
    if not chunked:
        yield text, False
        return
    starts = range(0, len(text), CHUNK_CHARS) or range(1)  # an empty text is one empty piece
    for start in starts:
        yield text[start : start + CHUNK_CHARS], start != starts[-1]


def output_events(line: str, chunked: bool) -> Iterator[pb.InvokeEvent]:
    """The events of one output line: one, or pieces marked continued but the last."""
    for piece, more in _pieces(line, chunked):
        yield pb.InvokeEvent(output=pb.OutputChunk(text=piece, continued=more))


def batch_events(lines: list[str]) -> Iterator[pb.InvokeEvent]:
    """The events of whole lines (none holding a newline) for a caller that speaks 1.4: as few OutputChunks as
    BATCH_CHARS allows, each its lines joined by "\n"; a line longer than BATCH_CHARS goes alone, in pieces."""
    group: list[str] = []
    size = 0
    for line in lines:
        if len(line) >= BATCH_CHARS:
            if group:
                yield pb.InvokeEvent(output=pb.OutputChunk(text="\n".join(group)))
                group, size = [], 0
            yield from output_events(line, True)
            continue
        if group and size + len(line) + 1 > BATCH_CHARS:
            yield pb.InvokeEvent(output=pb.OutputChunk(text="\n".join(group)))
            group, size = [], 0
        group.append(line)
        size += len(line) + 1
    if group:
        yield pb.InvokeEvent(output=pb.OutputChunk(text="\n".join(group)))


def result_events(
    chunked: bool,
    *,
    kind: int,
    text: str = "",
    data_json: str = "",
    exit_code: int = 0,
    error: str = "",
    error_type: str = "",
) -> Iterator[pb.InvokeEvent]:
    """The events of a final Result: one, or pieces of its text (or data_json) and a last piece with the rest.

    Built from the fields, not from a whole Result, so a large body is never held twice as a message.
    """
    body_field, body = ("data_json", data_json) if data_json else ("text", text)
    for piece, more in _pieces(body, chunked):
        part = (
            pb.Result(continued=True)
            if more
            else pb.Result(kind=kind, exit_code=exit_code, error=error, error_type=error_type)  # type: ignore[arg-type]
        )
        setattr(part, body_field, piece)
        yield pb.InvokeEvent(result=part)


class ReplyTooLargeError(Exception):
    """The peer sent more than MAX_REPLY_BYTES for one result or line."""


@dataclass(frozen=True)
class WholeResult:
    """A complete Result: the fields of its last piece, and its body joined from every piece."""

    kind: int
    text: str
    data_json: str
    exit_code: int
    error: str
    error_type: str


@dataclass
class Reassembler:
    """Joins continued pieces back into whole output lines and one whole result, within MAX_REPLY_BYTES."""

    _parts: list[str] = field(default_factory=list)
    _size: int = 0
    _is_data: bool = False

    def _add(self, piece: str) -> None:
        self._size += utf8_size(piece)
        if self._size > MAX_REPLY_BYTES:
            raise ReplyTooLargeError(too_large_message(self._size))
        self._parts.append(piece)

    def _take(self) -> str:
        joined = "".join(self._parts)  # one part: that very string, not a copy
        self._parts, self._size = [], 0
        return joined

    def feed(self, event: pb.InvokeEvent) -> str | WholeResult | None:
        """Take one event; return a whole output line or the whole result once complete, else None."""
        if event.HasField("output"):
            self._add(event.output.text)
            return None if event.output.continued else self._take()
        result = event.result
        self._is_data = self._is_data or bool(result.data_json)
        self._add(result.data_json or result.text)
        if result.continued:
            return None
        body, is_data, self._is_data = self._take(), self._is_data, False
        return WholeResult(
            kind=result.kind,
            text="" if is_data else body,
            data_json=body if is_data else "",
            exit_code=result.exit_code,
            error=result.error,
            error_type=result.error_type,
        )
