"""Batching a streaming command's lines: its generator runs in a thread of its own, lines go out in batches.

One gRPC message per line cost ~50 µs of send and as much again in the host and the CLI (about 19,000
lines/s). A generator command's lines are therefore collected while the previous batch is on its way and
sent together, flushed when `flush_bytes` characters are waiting or `flush_seconds` after the first line of
a batch came, so a generator that yields a line now and then (an interactive one) still shows each line
promptly: the thread that sends does not wait for the generator, which may be asleep for minutes.

The generator runs in the producer thread, its cancellation (`_cancel.py`) moved there with it, so a
cancelled call interrupts the generator, not the gRPC thread. At most `buffer_bytes` characters wait: a
generator faster than its reader is paused (memory stays bounded). If the sending side stops (the caller went
away), the producer stops at its next line and closes the generator (its `finally` blocks run).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Generic, TypeVar

from sysops_sdk._cancel import Cancellation, CommandCancelled

#: Seconds a line may wait for more lines before its batch goes out.
FLUSH_SECONDS = 0.02
#: A batch goes out as soon as this many characters wait.
FLUSH_BYTES = 128 << 10
#: The producer pauses while this many characters wait for the sender.
BUFFER_BYTES = 1 << 20
#: How often a paused producer looks whether its call was cancelled.
_PAUSE_POLL_SECONDS = 0.1

Final = TypeVar("Final")


class LineBatcher(Generic[Final]):
    """Drives `items` (text, then one final item) in a thread; `batches()` yields lists of lines, then the final."""

    def __init__(
        self,
        items: Iterator[str | Final],
        call: Cancellation,
        *,
        flush_seconds: float = FLUSH_SECONDS,
        flush_bytes: int = FLUSH_BYTES,
        buffer_bytes: int = BUFFER_BYTES,
    ) -> None:
        self._items = items
        self._call = call
        self._flush_seconds = flush_seconds
        self._flush_bytes = flush_bytes
        self._buffer_bytes = buffer_bytes
        self._ready = threading.Condition()
        self._lines: list[str] = []
        self._size = 0
        self._first_at = 0.0  # when the first line waiting came
        self._final: list[Final] = []
        self._failure: BaseException | None = None
        self._done = False
        self._closed = False
        self._thread = threading.Thread(target=self._produce, name="sysops-stream", daemon=True)

    # the producer (the command's generator, in its own thread)
    def _produce(self) -> None:
        self._call.adopt_thread()
        exhausted = False
        try:
            while True:
                item = self._next_item()
                if item is None:
                    exhausted = True
                    return
                if isinstance(item, str):
                    if not self._put(_lines_of(item)):
                        self._failure = CommandCancelled(f"command {self._call.command!r} was cancelled by its caller")
                        return
                else:
                    self._final.append(item)
        except BaseException as exc:  # CommandCancelled too: the sending side raises it in its thread
            self._failure = exc
            exhausted = True  # a generator that raised is finished
        finally:
            close = getattr(self._items, "close", None)
            if close is not None and not exhausted:
                with contextlib.suppress(Exception):  # the caller is gone: nobody to tell
                    close()  # stopped early: the generator's finally blocks run, in this thread
            with self._ready:
                self._done = True
                self._ready.notify_all()

    def _put(self, lines: list[str]) -> bool:
        """Add lines for the sender; False when the sender is gone (stop producing)."""
        added = sum(len(line) for line in lines) + len(lines)
        with self._ready:
            while self._size >= self._buffer_bytes and not self._closed:
                if self._call.event.is_set():
                    return False
                self._ready.wait(_PAUSE_POLL_SECONDS)
            if self._closed:
                return False
            if not self._lines:
                self._first_at = time.monotonic()
                self._lines = lines
                self._ready.notify_all()  # the sender starts its flush timer
            else:
                self._lines.extend(lines)
            before, self._size = self._size, self._size + added
            if before < self._flush_bytes <= self._size:
                self._ready.notify_all()
        return True

    # the sender (the gRPC thread)
    def batches(self) -> Iterator[list[str] | Final]:
        """Lists of lines as they are flushed, then the final item; re-raises what the generator raised."""
        try:
            self._thread.start()
        except RuntimeError:  # no thread to be had (the pids limit): each item goes as it comes, from here
            yield from self._unbatched()
            return
        try:
            while True:
                with self._ready:
                    while not self._ready_to_send():
                        self._ready.wait(self._wait_seconds())
                    lines, self._lines, self._size = self._lines, [], 0
                    done = self._done
                    self._ready.notify_all()  # a paused producer may go on
                if lines:
                    yield lines
                if done:
                    break
            self._thread.join()
            if self._failure is not None:
                raise self._failure
            yield from self._final
        finally:
            with self._ready:
                self._closed = True
                self._ready.notify_all()
            self._thread.join()

    def _unbatched(self) -> Iterator[list[str] | Final]:
        while (item := self._next_item()) is not None:
            yield _lines_of(item) if isinstance(item, str) else item

    def _next_item(self) -> str | Final | None:
        """The generator's next item, run in the call's handler mark (so a cancel interrupts it); None at its end."""
        self._call.enter_handler()
        try:
            return next(self._items, None)
        finally:
            self._call.leave_handler()

    def _ready_to_send(self) -> bool:
        if self._done or self._size >= self._flush_bytes:
            return True
        return bool(self._lines) and time.monotonic() - self._first_at >= self._flush_seconds

    def _wait_seconds(self) -> float | None:
        if not self._lines:
            return None  # the producer notifies when the first line comes or it ends
        return max(0.0, self._first_at + self._flush_seconds - time.monotonic())


def _lines_of(text: str) -> list[str]:
    """A command's text item as the lines it sends (an empty text is one empty line)."""
    return text.splitlines() or [""]
