"""Log lines for `plugin logs` in batches: one gRPC message per line capped a 500 MB log at a few thousand lines/s.

A caller that sets LogsRequest.batched gets LogLine messages whose text is several lines joined by "\\n", at most
BATCH_CHARS characters (a longer line alone): `batched_texts` groups a finished stream (plugin logs without -f),
`drain_batch` groups what a follow has buffered already, so a follow's line is never held back waiting for more.
"""

from __future__ import annotations

import queue
from collections.abc import Iterable, Iterator

#: Characters of lines (newlines included) in one batched LogLine at most.
BATCH_CHARS = 256 << 10


def batched_texts(lines: Iterable[str], batched: bool) -> Iterator[str]:
    """The texts of LogLine messages: each line, or (`batched`) lines joined by newlines up to BATCH_CHARS."""
    if not batched:
        yield from lines
        return
    group: list[str] = []
    size = 0
    for line in lines:
        if group and size + len(line) >= BATCH_CHARS:
            yield "\n".join(group)
            group, size = [], 0
        group.append(line)
        size += len(line) + 1
    if group:
        yield "\n".join(group)


def drain_batch(first: str, buffered: queue.Queue[str]) -> str:
    """`first` and the lines already waiting in `buffered` (never waiting for more), joined by newlines."""
    group = [first]
    size = len(first)
    while size < BATCH_CHARS:
        try:
            line = buffered.get_nowait()
        except queue.Empty:
            break
        group.append(line)
        size += len(line) + 1
    return "\n".join(group)
