"""The host's call socket: its wire format, and the call server over plugins of the fake driver, via the CLI."""

from __future__ import annotations

import io
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sysops.cli.host_call import HostCall
from sysops.cli.main import main
from sysops.core.command_shape import CommandShape, shape_from_spec
from sysops.core.orchestrator import Orchestrator
from sysops.errors import EngineUnavailableError, ExitCode, SysopsError
from sysops.host import call_wire as wire
from sysops.host.call_server import CallServer, start_call_server
from sysops.host.paths import host_paths
from sysops.settings import Settings
from sysops_sdk import Plugin, argument, cancel_event, plugin_command
from sysops_sdk.protocol.v1 import plugin_pb2 as pb

from tests.unit.test_rollout import _target

#: Set by the plugin when a call of `wait` starts, and when the plugin saw it cancelled.
STARTED = threading.Event()
CANCELLED = threading.Event()
ATTACK = "\x1b]52;c;cm0gLXJmIH4=\x07\u202e"


class Calls(Plugin):
    name = "calls"
    version = "1.0.0"
    description = "call socket test plugin"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("big")
    @argument("size", help="Bytes")
    def big(self, size: int) -> str:
        return "é" + "x" * (size - 2)  # not ASCII: counted and sent in UTF-8

    @plugin_command("wait")
    def wait(self) -> str:
        STARTED.set()
        if cancel_event().wait(30):
            CANCELLED.set()
        return "finished"

    @plugin_command("stuck", timeout=0.5)
    def stuck(self) -> str:
        cancel_event().wait(30)
        return "late"

    @plugin_command("evil")
    def evil(self) -> Iterator[str]:
        yield f"line {ATTACK}"
        yield f"result {ATTACK}"


@pytest.fixture
def plugin_classes() -> Iterator[dict[str, type[Plugin]]]:
    yield {"calls": Calls}


@pytest.fixture
def host(orchestrator: Orchestrator, settings: Settings, call_host: CallServer) -> Iterator[CallServer]:
    """The `calls` plugin serving, and the call socket in this process."""
    orchestrator.rollout.roll(_target("calls", name="calls"))
    STARTED.clear()
    CANCELLED.clear()
    yield call_host


# the wire format
def test_text_frames_arrive_whole_and_in_utf8() -> None:
    left, right = socket.socketpair()
    text = "é" * (3 << 20)  # 6 MiB of UTF-8, sent in slices
    sender = threading.Thread(target=wire.send_text, args=(left, {"type": wire.RESULT}, text))
    sender.start()
    reader = wire.Reader(right)
    header = reader.message()
    assert header == {"type": wire.RESULT, "bytes": 6 << 20}
    assert reader.text(header["bytes"]) == text
    sender.join()
    left.close()
    assert reader.message() is None  # closed between messages
    reader.close()
    right.close()


def test_broken_frames_are_wire_errors() -> None:
    left, right = socket.socketpair()
    left.sendall(b'{"type": "line", "bytes": 10}\nabc')
    left.close()
    reader = wire.Reader(right)
    header = reader.message()
    assert header is not None
    with pytest.raises(wire.WireError, match="7 bytes before the end"):
        reader.text(header["bytes"])
    with pytest.raises(wire.WireError, match="not a byte count"):
        list(reader.chunks(wire.MAX_TEXT_BYTES + 1))
    reader.close()
    right.close()
    with pytest.raises(ValueError, match="larger than"):
        wire.send_text(socket.socket(), {}, "x" * (wire.MAX_TEXT_BYTES + 1))


def test_shapes_round_trip_through_json() -> None:
    spec = pb.CommandSpec(
        help="Greets",
        params=[
            pb.ParamSpec(name="name", kind=pb.ParamSpec.ARGUMENT, type="str"),
            pb.ParamSpec(name="mode", kind=pb.ParamSpec.OPTION, flags=["--mode"], type="choice", choices=["a", "b"]),
            pb.ParamSpec(name="count", kind=pb.ParamSpec.OPTION, flags=["-n"], type="int", default_json="3"),
        ],
    )
    shape = shape_from_spec("greet", "hello", spec.SerializeToString())
    assert CommandShape.from_json(shape.to_json()) == shape
    assert shape.params[2].has_default and shape.params[2].default == 3 and shape.params[1].choices == ("a", "b")
    with pytest.raises(ValueError, match="not a command shape"):
        CommandShape.from_json({"name": "x"})


# the call server
def test_the_socket_is_0600_and_a_symlink_is_refused(settings: Settings, tmp_path: Path) -> None:
    path = host_paths(settings).call_socket
    server = start_call_server(settings, path)
    try:
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        with pytest.raises(EngineUnavailableError, match="another process serves it"):
            start_call_server(settings, path)
    finally:
        server.stop()
    assert not path.exists()
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(EngineUnavailableError, match="symlink"):
        start_call_server(settings, path)


def test_a_20_mib_result_arrives_whole(host: CallServer, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    size = 20 << 20
    assert main(["big", str(size)]) == 0
    out = capfdbinary.readouterr().out
    assert len(out) == size + 1 and out.startswith("é".encode()) and out.endswith(b"x\n")


def test_routes_are_shapes(host: CallServer, settings: Settings) -> None:
    with HostCall(settings) as call:
        assert [shape.name for shape in call.routes()] == ["big", "evil", "stuck", "wait"]
        (big,) = call.routes("big")
    assert big.plugin == "calls" and big.params[0].name == "size" and big.params[0].type == "int"


def test_a_client_that_goes_away_cancels_the_call_in_the_plugin(host: CallServer, settings: Settings) -> None:
    connection = socket.socket(socket.AF_UNIX)
    connection.connect(str(host.path))
    wire.send(connection, {"op": wire.INVOKE, "command": "wait", "arguments": {}, "output": "text"})
    assert STARTED.wait(5)
    connection.close()  # as a CLI killed with -9 does
    assert CANCELLED.wait(5), "the plugin's call was not cancelled"


def test_a_host_that_goes_away_mid_call_is_one_line_exit_5(
    host: CallServer, capsys: pytest.CaptureFixture[str]
) -> None:
    threading.Thread(target=lambda: STARTED.wait(5) and host.stop(), daemon=True).start()
    assert main(["wait"]) == ExitCode.ENGINE_UNAVAILABLE
    err = capsys.readouterr().err
    assert err.startswith("error: calls: wait: the sysops host went away during the call") and err.count("\n") == 1
    assert CANCELLED.wait(5)


def test_an_expired_deadline_is_exit_10_naming_plugin_and_command(
    host: CallServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stuck"]) == ExitCode.DEADLINE_EXCEEDED
    err = capsys.readouterr().err
    assert "'calls'" in err and "'stuck'" in err and "0.5" in err, err


def test_the_65th_connection_is_told_the_host_is_busy(host: CallServer) -> None:
    held = []
    try:
        for _ in range(64):
            connection = socket.socket(socket.AF_UNIX)
            connection.connect(str(host.path))
            held.append(connection)
        wire.send(held[0], {"op": wire.ROUTES, "prefix": "big"})  # the first 64 are served
        assert held[0].recv(1 << 16).startswith(b'{"type":"routes"')
        refused = socket.socket(socket.AF_UNIX)
        refused.connect(str(host.path))
        refused.settimeout(5)
        lines = refused.makefile("rb").read().splitlines()
        refused.close()
        assert len(lines) == 1 and b"host is busy: 64 calls" in lines[0] and b'"exit_code":5' in lines[0]
    finally:
        for connection in held:
            connection.close()


def test_an_idle_client_is_dropped(settings: Settings) -> None:
    server = start_call_server(settings, host_paths(settings).call_socket, idle_seconds=0.3)
    try:
        connection = socket.socket(socket.AF_UNIX)
        connection.connect(str(server.path))
        connection.settimeout(5)
        started = time.monotonic()
        assert connection.recv(1) == b""  # closed by the host
        assert 0.2 < time.monotonic() - started < 4
        connection.close()
    finally:
        server.stop()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plugin_text_reaches_a_terminal_escaped(host: CallServer, monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(["evil"]) == 0
    shown = terminal.getvalue()
    assert "\x1b" not in shown and "\u202e" not in shown and "\x07" not in shown
    assert shown.count("\\x1b]52;c;") == 2


def test_the_routed_path_imports_no_grpc_protobuf_or_heavy_clients(host: CallServer, home: Path) -> None:
    code = (
        "import sys; from sysops.cli.main import main; code = main(['big', '10']); assert code == 0, code; "
        "bad = {'grpc', 'google.protobuf', 'docker', 'kubernetes', 'pydantic', 'typer', 'yaml'} & set(sys.modules); "
        "assert not bad, bad"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "SYSOPS_HOME": str(home)}, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == "é".encode() + b"x" * 8 + b"\n"


def test_ctrl_c_in_the_cli_is_exit_130_and_cancels_the_call(host: CallServer, home: Path) -> None:
    cli = subprocess.Popen(
        [sys.executable, "-m", "sysops.cli.main", "wait"],
        env={**os.environ, "SYSOPS_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert STARTED.wait(30)
        cli.send_signal(signal.SIGINT)
        _, err = cli.communicate(timeout=30)
    finally:
        cli.kill()
    assert cli.returncode == ExitCode.INTERRUPTED
    assert err.decode() == "error: calls: wait: interrupted (Ctrl-C); the call was cancelled in the plugin\n"
    assert CANCELLED.wait(5)


def test_a_client_that_does_not_read_is_dropped(orchestrator: Orchestrator, settings: Settings) -> None:
    orchestrator.rollout.roll(_target("calls", name="calls"))
    server = start_call_server(settings, settings.home / "slow-reader.sock", send_seconds=0.3)
    try:
        connection = socket.socket(socket.AF_UNIX)
        connection.connect(str(server.path))
        wire.send(connection, {"op": wire.INVOKE, "command": "big", "arguments": {"size": 20 << 20}, "output": "text"})
        time.sleep(3)  # the result fills the socket's buffers; the host gives up on the send after 0.3 s
        connection.settimeout(5)
        received = 0
        while chunk := connection.recv(1 << 20):
            received += len(chunk)
        connection.close()
        assert 0 < received < 20 << 20
    finally:
        server.stop()


def test_a_bug_ends_one_connection_and_the_host_keeps_serving(
    host: CallServer, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(CallServer, "_answer_routes", broken)
    for _ in range(3):  # more than the workers there are
        with HostCall(settings) as call, pytest.raises(SysopsError, match="internal error in the sysops host"):
            call.routes()
    monkeypatch.undo()
    with HostCall(settings) as call:
        assert [shape.name for shape in call.routes("big")] == ["big"]


def test_the_cli_starts_the_host_when_its_socket_is_missing(
    orchestrator: Orchestrator, settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sysops.host import launcher

    orchestrator.rollout.roll(_target("calls", name="calls"))
    started: list[CallServer] = []

    def ensure_host(given: Settings | None = None) -> object:  # answers before its call socket is open
        assert given is not None and given.home == settings.home
        opening = threading.Timer(
            0.3, lambda: started.append(start_call_server(settings, host_paths(settings).call_socket))
        )
        opening.start()
        return host_paths(settings)

    monkeypatch.setattr(launcher, "ensure_host", ensure_host)
    try:
        assert main(["big", "3"]) == 0
        assert capsys.readouterr().out == "éx\n"
        assert len(started) == 1
    finally:
        for server in started:
            server.stop()


def test_a_store_removed_under_the_host_is_read_afresh(host: CallServer, settings: Settings) -> None:
    with HostCall(settings) as call:  # one connection: one worker, with its store connection
        assert len(call.routes()) == 4
        for suffix in ("", "-wal", "-shm"):
            settings.store_path.with_name(settings.store_path.name + suffix).unlink(missing_ok=True)
        assert call.routes() == []  # not the routes of the removed file, which a kept connection still reads


def test_the_clis_command_timeout_setting_is_the_one_applied(host: CallServer, home: Path) -> None:
    def cli(timeout: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SYSOPS_HOME": str(home), "SYSOPS_COMMAND_TIMEOUT": timeout}
        command = [sys.executable, "-m", "sysops.cli.main", "wait"]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    assert "SYSOPS_COMMAND_TIMEOUT" not in os.environ  # the host's (this process's) own setting is the default
    bad = cli("soon")
    assert bad.returncode == ExitCode.USAGE and "SYSOPS_COMMAND_TIMEOUT='soon' is not a number" in bad.stderr
    short = cli("0.5")
    assert short.returncode == ExitCode.DEADLINE_EXCEEDED and "0.5s deadline" in short.stderr, short.stderr
    assert CANCELLED.wait(5)
