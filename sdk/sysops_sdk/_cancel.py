"""Cancellation of a command whose caller abandoned it (deadline, Ctrl-C, a killed client).

gRPC tells the plugin server when a call ends before its handler did; this module turns that into
something a handler can see and, for a handler that does not look, into an end:

1. at once, `cancelled()` becomes true and `cancel_event()` is set (a handler may wait on it), and a
   `time.sleep` in the command returns early by raising `CommandCancelled` (the server installs
   `interruptible_sleep` as `time.sleep` before it imports the plugin);
2. after a grace (`SYSOPS_CANCEL_GRACE`, 1 s), a handler still running gets `CommandCancelled` raised
   in its thread (an asynchronous exception, `PyThreadState_SetAsyncExc`), so a `while True:` loop stops
   and gives its gRPC worker thread and its CPU back. The interruption is counted and logged. It waits
   while the handler is inside the standard library (logging, threading, queue, an import): raised there,
   between a lock's acquire and the `try` that releases it, it would leave the lock held for good and
   hang every later call that needs it. It is raised once the handler is back in its own code.

What cannot be stopped: Python delivers an asynchronous exception only between bytecodes, so a thread
blocked in C (a socket read without timeout, `subprocess.wait`, a lock, a C extension's loop) goes on
until that call returns, and then stops before the next Python line runs. `CommandCancelled` derives
from BaseException so `except Exception:` in a handler does not swallow it; `except BaseException:`
does, and such a handler cannot be stopped.
"""

from __future__ import annotations

import ctypes
import heapq
import logging
import os
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import SupportsIndex

#: Seconds a cancelled handler may run on (to finish cleanly) before CommandCancelled is raised in it.
DEFAULT_GRACE_SECONDS = 1.0
#: How often an interruption waiting for the handler to leave the standard library looks again.
RETRY_SECONDS = 0.02
_STDLIB = tuple({os.path.join(sysconfig.get_path(name), "") for name in ("stdlib", "platstdlib")})

log = logging.getLogger("sysops_sdk.server")
_original_sleep: Callable[[float | SupportsIndex], None] = time.sleep
_current = threading.local()
_interrupted_lock = threading.Lock()
_interrupted = 0


class CommandCancelled(BaseException):
    """The caller abandoned this command (its deadline passed, Ctrl-C, or it went away)."""


def grace_seconds() -> float:
    """The grace before a cancelled handler is interrupted (`SYSOPS_CANCEL_GRACE`, default 1 s)."""
    try:
        value = float(os.environ.get("SYSOPS_CANCEL_GRACE", DEFAULT_GRACE_SECONDS))
    except ValueError:
        return DEFAULT_GRACE_SECONDS
    return value if 0 <= value < 3600 else DEFAULT_GRACE_SECONDS


def interrupted_count() -> int:
    """Handlers interrupted by CommandCancelled since the server started (they ignored their cancellation)."""
    return _interrupted


class Cancellation:
    """The cancellation state of one call, bound to the thread that runs its handler.

    The handler is interrupted only while that thread is inside it (between `enter_handler` and
    `leave_handler`): a streaming handler paused at a `yield` is not running, and its thread may be
    serving gRPC, so nothing is raised there.
    """

    def __init__(self, command: str, grace: float | None = None) -> None:
        self.command = command
        self.event = threading.Event()
        self._thread = threading.get_ident()
        self._grace = grace_seconds() if grace is None else grace
        self._lock = threading.Lock()
        self._finished = False
        self._running = False
        self._pending = False  # CommandCancelled sent to the thread, perhaps not delivered yet
        self._caller: FrameType | None = None  # the frame that called enter_handler: frames above are the handler's

    def __enter__(self) -> Cancellation:
        _current.call = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.finish()

    def cancel(self) -> None:
        """The caller abandoned the call (from any thread): signal it now, interrupt the handler after the grace."""
        with self._lock:
            if self._finished or self.event.is_set():
                return
            self.event.set()
        _reaper.schedule(time.monotonic() + self._grace, self._interrupt)

    def adopt_thread(self) -> None:
        """The handler runs on in the calling thread from now on (a streaming command's own thread,
        `_line_batches.py`): interruptions and `cancelled()` follow it there."""
        with self._lock:
            self._thread = threading.get_ident()
        _current.call = self

    def enter_handler(self) -> None:
        """The thread runs the handler's code from now on."""
        with self._lock:
            self._running = True
            self._caller = sys._getframe(1)

    def leave_handler(self) -> None:
        """The handler returned or yielded: an interruption not delivered yet must not hit other code."""
        with self._lock:
            self._running = False
            self._withdraw()

    def finish(self) -> None:
        """The call is over: never interrupt this thread for it any more (idempotent)."""
        with self._lock:
            self._finished = True
            self._running = False
            self._caller = None
            self._withdraw()
        if getattr(_current, "call", None) is self:
            _current.call = None

    def _withdraw(self) -> None:
        if self._pending:
            self._pending = False
            _async_raise(self._thread, None)

    def _interrupt(self) -> None:
        global _interrupted
        with self._lock:
            if self._finished or not self._running:
                return
            if self._in_standard_library():
                _reaper.schedule(time.monotonic() + RETRY_SECONDS, self._interrupt)
                return
            self._pending = True
            _async_raise(self._thread, CommandCancelled)
        with _interrupted_lock:
            _interrupted += 1
            count = _interrupted
        print(
            f"sysops-plugin: command {self.command!r} ignored its cancellation for {self._grace:g}s: "
            f"interrupted ({count} so far)",
            file=sys.stderr,
            flush=True,
        )

    def _in_standard_library(self) -> bool:
        """Whether the handler's thread runs standard-library code (which may hold a lock) now."""
        frame = sys._current_frames().get(self._thread)
        while frame is not None and frame is not self._caller:
            name = frame.f_code.co_filename
            if name.startswith("<frozen ") or (name.startswith(_STDLIB) and "-packages" + os.sep not in name):
                return True
            frame = frame.f_back
        return False


class _Reaper:
    """One thread that interrupts handlers whose grace ran out: no thread is started per cancellation, so
    this works when the pids limit refuses new threads (the reaper is started with the server)."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._sequence = 0

    def start(self) -> None:
        """Start the reaper thread (idempotent)."""
        with self._wake:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sysops-cancel-reaper", daemon=True)
                self._thread.start()

    def schedule(self, when: float, action: Callable[[], None]) -> None:
        """Run `action` at monotonic time `when`."""
        self.start()
        with self._wake:
            self._sequence += 1
            heapq.heappush(self._due, (when, self._sequence, action))
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._wake.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, action = heapq.heappop(self._due)
            try:
                action()
            except Exception:  # never lose the reaper: later cancellations depend on it
                log.exception("interrupting a cancelled command failed")


_reaper = _Reaper()


def start_reaper() -> None:
    """Start the thread that interrupts cancelled handlers (the server does, before the pids limit can bite)."""
    _reaper.start()


def _async_raise(thread: int, exception: type[BaseException] | None) -> None:
    """Raise `exception` in `thread` at its next bytecode; None (a NULL pointer) withdraws a pending one."""
    argument = ctypes.py_object(exception) if exception is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), argument)


def _this_call() -> Cancellation | None:
    call: Cancellation | None = getattr(_current, "call", None)
    return call


def cancelled() -> bool:
    """Whether the caller abandoned the command running in this thread (False outside a command)."""
    call = _this_call()
    return call is not None and call.event.is_set()


def cancel_event() -> threading.Event:
    """An Event set when the caller abandons the command running in this thread (never set outside one)."""
    call = _this_call()
    return call.event if call is not None else threading.Event()


def interruptible_sleep(seconds: float | SupportsIndex) -> None:
    """`time.sleep`, except that in a command it ends early with CommandCancelled when the call is abandoned."""
    call = _this_call()
    if call is None:
        _original_sleep(seconds)
        return
    if call.event.wait(max(0.0, float(seconds))):
        raise CommandCancelled(f"command {call.command!r} was cancelled by its caller")


def install_interruptible_sleep() -> None:
    """Make `time.sleep` interruptible in commands (before the plugin imports it as `from time import sleep`)."""
    time.sleep = interruptible_sleep
