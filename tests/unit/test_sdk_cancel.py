"""Deadlines and cancellation between the orchestrator's client and a real plugin server, in-process.

The deadline travels with the gRPC call; the plugin cancels the handler when its caller abandons it:
`cancelled()` turns true, `time.sleep` ends early, a loop that ignores both is interrupted after the
grace, and abandoned calls give their worker threads back.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sysops_sdk
from sysops.core.client import Abandon, InvocationResult, PluginClient
from sysops.errors import CallInterruptedError, DeadlineExceededError
from sysops_sdk import CommandCancelled, CommandDefinitionError, Plugin, _cancel, cancelled, plugin_command
from sysops_sdk._server import PluginRuntime, PluginServer

#: These tests interrupt handler threads of an in-process server with real asynchronous exceptions. Under
#: coverage's tracer (pytest --cov) that wedged every later thread start of the test process, so
#: scripts/test.sh runs them in a pytest of their own without coverage, as plugins run (untraced).
pytestmark = pytest.mark.untraced

SEEN: list[str] = []


class Slow(Plugin):
    name = "slow"
    version = "1.0.0"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("spin", timeout=0.5)
    def spin(self) -> str:
        SEEN.append("spin")
        while True:
            pass

    @plugin_command("polite")
    def polite(self) -> str:
        while not cancelled():
            pass
        SEEN.append("polite saw it")
        return "bye"

    @plugin_command("nap")
    def nap(self) -> str:
        time.sleep(30)
        SEEN.append("nap side effect")
        return "rested"

    @plugin_command("ping")
    def ping(self) -> str:
        return "pong"


@pytest.fixture
def endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("SYSOPS_CANCEL_GRACE", "0.2")
    monkeypatch.setattr(time, "sleep", _cancel.interruptible_sleep)  # what serve() installs
    SEEN.clear()
    server = PluginServer(PluginRuntime(Slow()), f"unix://{tmp_path}/plugin.sock")
    server.start()
    try:
        yield f"unix://{tmp_path}/plugin.sock"
    finally:
        server.server.stop(0)


def call(endpoint: str, command: str, timeout: float | None = None, abandon: Abandon | None = None) -> list[object]:
    with PluginClient(endpoint, "slow") as client:
        return list(client.invoke(command, {}, timeout=timeout, abandon=abandon))


def answer(endpoint: str) -> str:
    result = call(endpoint, "ping", timeout=2)[-1]
    assert isinstance(result, InvocationResult)
    return result.text


def test_the_declared_timeout_is_described() -> None:
    spec = PluginRuntime(Slow()).describe().commands
    assert {command.name: command.timeout_seconds for command in spec} == {
        "spin": 0.5,
        "polite": 0.0,
        "nap": 0.0,
        "ping": 0.0,
    }


@pytest.mark.parametrize("bad", [0, -1, True, float("inf"), float("nan"), 86_401, "5"])
def test_a_bad_timeout_is_refused_in_one_line(bad: object) -> None:
    with pytest.raises(CommandDefinitionError, match=r"command 'x': timeout=.* must be a number of seconds above 0"):
        plugin_command("x", timeout=bad)  # type: ignore[arg-type]


def test_an_expired_deadline_interrupts_a_loop_and_frees_its_worker(endpoint: str) -> None:
    started = time.monotonic()
    before = _cancel.interrupted_count()
    with pytest.raises(DeadlineExceededError, match=r"command 'spin' did not finish within 0\.5s"):
        call(endpoint, "spin", timeout=0.5)
    assert time.monotonic() - started < 2
    before += 1
    # 20 abandoned loops: more than the server's 16 workers; each is interrupted after the grace.
    threads = [threading.Thread(target=_abandon, args=(endpoint, "spin")) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    deadline = time.monotonic() + 5
    while _cancel.interrupted_count() < before + SEEN.count("spin") - 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    # Every loop that started was interrupted (a call whose deadline passed before a worker took it never runs).
    # Each abandoned call ran at most once. How many ran depends on the machine's pace: on a loaded one a call can
    # reach the server after its deadline and never start (CI saw 15 of 20), and threads started late have later
    # deadlines, so they can still start once the first loops were interrupted and freed their workers (CI saw 19).
    ran = SEEN.count("spin") - 1
    assert 0 < ran <= 20 and _cancel.interrupted_count() == before + ran
    started = time.monotonic()
    assert answer(endpoint) == "pong" and time.monotonic() - started < 1


def _abandon(endpoint: str, command: str) -> None:
    with pytest.raises(DeadlineExceededError):
        call(endpoint, command, timeout=2)


def test_the_handler_sees_the_cancellation_and_sleep_ends_early(endpoint: str) -> None:
    with pytest.raises(DeadlineExceededError):
        call(endpoint, "polite", timeout=0.3)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        call(endpoint, "nap", timeout=0.3)
    while len(SEEN) < 1 and time.monotonic() - started < 3:
        time.sleep(0.05)
    time.sleep(0.5)
    assert SEEN == ["polite saw it"]  # and the 30 s nap never reached its side effect
    assert answer(endpoint) == "pong"


def test_an_abandon_from_another_thread_cancels_the_plugin_call(endpoint: str) -> None:
    abandon = Abandon()
    threading.Timer(0.3, abandon).start()
    with pytest.raises(CallInterruptedError, match="command 'polite' abandoned by its caller"):
        call(endpoint, "polite", abandon=abandon)
    deadline = time.monotonic() + 3
    while "polite saw it" not in SEEN and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "polite saw it" in SEEN


def test_outside_a_command_nothing_is_cancelled() -> None:
    assert not sysops_sdk.cancelled() and not sysops_sdk.cancel_event().is_set()
    started = time.monotonic()
    _cancel.interruptible_sleep(0.01)
    assert time.monotonic() - started >= 0.01


def test_an_interruption_is_never_delivered_after_the_handler_finished() -> None:
    with _cancel.Cancellation("x", grace=0.0) as cancellation:
        cancellation.enter_handler()
        cancellation.leave_handler()  # the handler returned before the grace ran out
        cancellation.cancel()
        time.sleep(0.2)  # the reaper ran: the thread is not in the handler, nothing is raised
    with _cancel.Cancellation("y", grace=0.0) as cancellation:
        cancellation.enter_handler()
        cancellation.cancel()
        with pytest.raises(CommandCancelled):
            while True:
                pass
        cancellation.leave_handler()


def test_an_interruption_never_leaves_a_standard_library_lock_held() -> None:
    """CommandCancelled raised inside logging, just after its handler lock was taken and before the `try`
    that releases it, left the lock held for good: every later log call in the plugin hung (and so did its
    exit). The interruption waits until the handler is back in its own code."""
    logger = logging.getLogger("test_sdk_cancel.chatty")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    log_handler = logging.StreamHandler(io.StringIO())
    logger.addHandler(log_handler)
    calls: list[_cancel.Cancellation] = []
    stopped = threading.Event()

    def chatty() -> None:
        with _cancel.Cancellation("chatty", grace=0.0) as call:
            calls.append(call)
            call.enter_handler()
            try:
                while True:
                    logger.info("working")
                    for _ in range(1000):  # and some work of its own, where the interruption lands
                        pass
            except CommandCancelled:
                stopped.set()
            finally:
                call.leave_handler()

    log_handler.acquire()  # the handler's thread waits inside logging for this lock
    thread = threading.Thread(target=chatty, daemon=True)
    try:
        thread.start()
        time.sleep(0.2)
        calls[0].cancel()
        time.sleep(0.2)  # the reaper ran while the thread was inside logging
    finally:
        log_handler.release()
    thread.join(timeout=10)
    try:
        assert stopped.is_set(), "the loop was interrupted"
        assert log_handler.lock.acquire(timeout=1), "logging's lock is free"
        log_handler.lock.release()
    finally:
        logger.removeHandler(log_handler)
