"""The Docker driver's log reading (runtime/docker/log_stream.py) on the real engine: the whole log, in order,
stdout and stderr, a tail, a long line cut in pieces, a follow that shows a line before the next is written and
ends when closed; the same lines `docker logs` prints. Both ways of asking: HTTP/1.0 on the engine's Unix socket
(its body unchunked) and the docker SDK's session (HTTP/1.1 chunks: an engine on tcp, TLS or ssh)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from sysops.runtime.base import StreamCancel
from sysops.runtime.docker import log_stream
from sysops.runtime.docker.driver import DockerDriver
from sysops.runtime.docker.log_stream import LogStream

BASE = "sysops/plugin-base:0.1.0"
WRITER = """
import sys, time
for n in range(60000):
    (sys.stderr if n % 1000 == 999 else sys.stdout).write(f"line {n} " + "x" * (n % 50) + "\\n")
sys.stdout.write("L" * 70000 + "\\n")
sys.stdout.write("last\\n")
sys.stdout.flush()
time.sleep(float(sys.argv[1]))
"""


@pytest.fixture
def writer(engine: docker.DockerClient, request: pytest.FixtureRequest) -> Iterator[str]:
    label = f"sysops-test-logs-{uuid.uuid4().hex[:8]}"
    container = engine.containers.run(
        BASE,
        ["-c", WRITER, str(getattr(request, "param", 0))],
        entrypoint="/opt/sysops/bin/python",
        detach=True,
        labels={label: "1"},
        network_mode="none",
    )
    try:
        yield str(container.id)
    finally:
        container.remove(force=True)


@pytest.fixture(params=["unix-http10", "sdk-session"])
def read_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "sdk-session":  # what an engine on tcp, TLS or ssh gets
        monkeypatch.setattr(log_stream, "_unix_socket_path", lambda api: None)
    return str(request.param)


def _expected() -> list[str]:
    lines = [f"line {n} " + "x" * (n % 50) for n in range(60000)]
    return [*lines, "L" * 65536, "L" * (70000 - 65536), "last"]


def _wait_for_last(driver: DockerDriver, handle: str) -> None:
    """Wait until the writer's stdout is all in the log: "last" among its last two entries.

    The engine copies stdout and stderr in a goroutine each, so their entries reach the log in no set order:
    stderr's "line 59999" lands before "last" (usually thousands of entries before: Python buffers stdout),
    between the 16 KiB entries of the long line, or after "last" (seen under load, where `tail=1` then stays
    "line 59999 ..." for good). Only it can follow "last"."""
    deadline = time.monotonic() + 60
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = list(driver.logs(handle, tail=2))
        except Exception as exc:  # the message below says which, if it lasts
            last = exc
        if isinstance(last, list) and "last" in last:
            return
        time.sleep(0.2)
    raise AssertionError(f"the writer did not finish: {str(last)[:300]}")


def _is_stderr(line: str) -> bool:
    return line.startswith("line") and int(line.split()[1]) % 1000 == 999


def test_the_whole_log_in_order_with_stderr_and_long_lines_cut(
    writer: str, read_path: str, engine: docker.DockerClient
) -> None:
    driver = DockerDriver()
    engine.containers.get(writer).wait(timeout=60)  # the engine has logged both streams once it has exited
    lines = list(driver.logs(writer))
    assert sorted(lines) == sorted(_expected())  # stdout and stderr reach the engine through two pipes: any order
    assert [line for line in lines if not _is_stderr(line)] == [line for line in _expected() if not _is_stderr(line)]
    docker_logs = subprocess.run(["docker", "logs", writer], capture_output=True, check=True)
    shown = {"out": docker_logs.stdout.decode().splitlines(), "err": docker_logs.stderr.decode().splitlines()}
    cut = [piece for line in shown["out"] for piece in ([line[:65536], line[65536:]] if len(line) > 65536 else [line])]
    # Each stream's lines as `docker logs` prints them, in the engine's order; not `2>&1`: the engine may log a
    # stderr line between the 16 KiB entries of the long stdout line, and `docker logs` then prints them joined.
    assert [line for line in lines if not _is_stderr(line)] == cut
    assert [line for line in lines if _is_stderr(line)] == shown["err"]
    tail = list(driver.logs(writer, tail=1000))
    assert tail == lines[-len(tail) :] and "last" in tail[-2:] and len(tail) > 900


@pytest.mark.parametrize("writer", [30], indirect=True)
def test_a_follow_shows_lines_as_they_come_and_ends_when_closed(writer: str, read_path: str) -> None:
    driver = DockerDriver()
    _wait_for_last(driver, writer)
    cancel = StreamCancel()
    seen: list[str] = []

    def follow() -> None:
        seen.extend(driver.logs(writer, follow=True, tail=2, cancel=cancel))

    thread = threading.Thread(target=follow)
    thread.start()
    deadline = time.monotonic() + 10
    while "last" not in seen and time.monotonic() < deadline:  # the writer sleeps 30 s after its last line
        time.sleep(0.05)
    assert "last" in seen[-2:]  # stderr's "line 59999" may follow it (_wait_for_last)
    cancel.cancel()
    thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.mark.parametrize("writer", [30], indirect=True)
def test_a_quiet_follow_outlives_the_client_timeout_and_ends_at_once_when_cancelled(
    writer: str, read_path: str
) -> None:
    """A follow of a plugin printing nothing raised "Read timed out" once the client's timeout passed (60 s in
    the driver, 1 s here), and a cancel did not end a read blocked in it."""
    driver = DockerDriver(docker.from_env(timeout=1))
    _wait_for_last(driver, writer)
    cancel = StreamCancel()
    failures: list[BaseException] = []

    def follow() -> None:
        try:
            for _ in driver.logs(writer, follow=True, tail=1, cancel=cancel):
                pass
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    time.sleep(2.5)  # quiet for longer than the client's timeout
    assert thread.is_alive() and not failures, failures
    cancelled = time.monotonic()
    cancel.cancel()
    thread.join(timeout=5)
    assert not thread.is_alive() and not failures, failures
    assert time.monotonic() - cancelled < 2


def test_on_the_unix_socket_the_engine_sends_the_log_unchunked(writer: str) -> None:
    """HTTP/1.1 made the engine send a chunk per line, each decoded in Python: most of the host's CPU for a large
    log. Asked in HTTP/1.0, the body comes as it is, ended by the engine closing the connection."""
    _wait_for_last(DockerDriver(), writer)
    stream = LogStream(docker.from_env().api, writer, tty=False, tail=2, follow=False)
    try:
        body = stream._body
        assert getattr(body, "version", None) == 10 and getattr(body, "chunked", True) is False
        assert b"".join(stream).endswith(b"LLLL\nlast\n")  # the engine keeps a long line in 16 KiB entries
    finally:
        stream.close()


def test_an_unknown_container_is_not_found_and_the_driver_shows_nothing(read_path: str) -> None:
    api = docker.from_env().api
    with pytest.raises(docker.errors.NotFound):
        LogStream(api, f"no-such-{uuid.uuid4().hex[:8]}", tty=False, tail=None, follow=False)
    assert list(DockerDriver().logs(f"no-such-{uuid.uuid4().hex[:8]}")) == []


def _silent_engine(path: Path, reply: bytes = b"") -> socket.socket:
    """A Unix socket that accepts, optionally sends `reply`, and then says nothing more (a wedged engine)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = server.accept()
                connection.recv(65536)
                connection.sendall(reply)
                kept.append(connection)

    kept: list[socket.socket] = []
    threading.Thread(target=serve, daemon=True).start()
    return server


@pytest.mark.parametrize("follow", [True, False])
def test_an_engine_that_never_answers_is_an_error_within_the_client_timeout(tmp_path: Path, follow: bool) -> None:
    """The follow asked with no timeout at all, so a wedged engine held the reading thread (and a server's
    follower slot) for good; it gets the client's timeout until the reply's head has come."""
    server = _silent_engine(tmp_path / "engine.sock")
    api = docker.APIClient(base_url=f"unix://{tmp_path / 'engine.sock'}", timeout=1, version="1.41")
    raised: list[BaseException] = []

    def ask() -> None:
        try:
            LogStream(api, "x", tty=False, tail=None, follow=follow)
        except BaseException as exc:  # what the test checks below
            raised.append(exc)

    asking = threading.Thread(target=ask, daemon=True)  # a regression hangs here, not the test run
    try:
        asking.start()
        asking.join(5)
        assert not asking.is_alive(), "still waiting for an engine that never answers"
        assert len(raised) == 1 and isinstance(raised[0], docker.errors.APIError), raised
        assert "cannot read the log" in str(raised[0])
    finally:
        server.close()


def test_an_error_reply_whose_body_stalls_is_an_api_error(tmp_path: Path) -> None:
    head = b"HTTP/1.0 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    server = _silent_engine(tmp_path / "engine.sock", head)
    api = docker.APIClient(base_url=f"unix://{tmp_path / 'engine.sock'}", timeout=1, version="1.41")
    try:
        with pytest.raises(docker.errors.APIError):
            LogStream(api, "x", tty=False, tail=None, follow=False)
    finally:
        server.close()
