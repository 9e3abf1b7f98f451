"""The call path: terminal escaping, capped messages, chunked replies, argument checks, re-sends, the drain count."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from sysops.cli.main import main
from sysops.core import router
from sysops.core.client import InvocationResult, invocation_items
from sysops.errors import CommandFailedError, ExitCode, PluginUnavailableError, UsageError
from sysops.safe_text import cap, escape_controls, for_terminal
from sysops.store import Route
from sysops_sdk import _chunks
from sysops_sdk._chunks import CHUNK_CHARS, Reassembler, WholeResult, output_events, result_events, speaks_chunks
from sysops_sdk._server import PluginRuntime
from sysops_sdk.protocol.v1 import plugin_pb2 as pb

from tests.unit.conftest import EchoV1

ATTACK = "\x1b]52;c;cm0gLXJmIH4=\x07\x1b]0;pwned\x07\x1b[2J\rsafe\x08\u202eexe.txt\u2066\x9b31m\x7f"


def test_escape_controls_leaves_nothing_a_terminal_obeys() -> None:
    escaped = escape_controls(f"a\t{ATTACK}\nb")
    assert escaped == (
        "a\t\\x1b]52;c;cm0gLXJmIH4=\\x07\\x1b]0;pwned\\x07\\x1b[2J\\x0dsafe\\x08\\u202eexe.txt\\u2066\\x9b31m\\x7f\nb"
    )
    assert all(char.isprintable() or char in "\t\n" for char in escaped)
    assert escape_controls("héllo wörld ✓ 日本") == "héllo wörld ✓ 日本"
    assert escape_controls("a\nb", one_line=True) == "a\\x0ab"


def test_echoed_messages_are_capped_on_one_line() -> None:
    assert cap("x" * 10, 4) == "xxxx… (6 more characters)"
    line = for_terminal("arg " * 10_000)
    assert len(line) < 600 and line.endswith("(39500 more characters)")


def test_sysops_errors_and_click_errors_are_one_short_escaped_line(capsys: pytest.CaptureFixture[str]) -> None:
    from sysops.cli.main import run_guarded

    def fail() -> None:
        raise CommandFailedError(f"hostile: escapes: boom {ATTACK}" + "y" * 2000, hint="see logs", details=ATTACK)

    assert run_guarded(fail) == ExitCode.COMMAND_FAILED
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err and "\u202e" not in err
    first, details = err.splitlines()
    assert first.startswith("error: hostile: escapes: boom \\x1b]52;") and first.endswith("more characters); see logs")
    assert details.startswith("  \\x1b]52")
    assert main(["plugin", "ls", *(["extra"] * 10_000)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert len(err) < 1500 and "more characters" in err


def _reassemble(events: list[pb.InvokeEvent]) -> list[str | WholeResult]:
    pieces = Reassembler()
    return [whole for event in events if (whole := pieces.feed(event)) is not None]


@pytest.mark.parametrize("field", ["text", "data_json"])
def test_large_results_go_in_pieces_and_come_back_whole(field: str) -> None:
    body = "é" * (2 * CHUNK_CHARS + 5)  # 2 bytes a character: three pieces, none over 2 MiB
    fields: dict[str, Any] = {"kind": pb.Result.TEXT, "exit_code": 0, field: body}
    events = list(result_events(True, **fields))
    assert len(events) == 3 and all(event.ByteSize() <= _chunks.MAX_MESSAGE_BYTES for event in events)
    assert [event.result.continued for event in events] == [True, True, False]
    [whole] = _reassemble(events)
    assert isinstance(whole, WholeResult) and getattr(whole, field) == body and whole.kind == pb.Result.TEXT
    assert len(list(result_events(False, **fields))) == 1  # a 1.0 caller gets it whole


def test_a_long_output_line_goes_in_pieces() -> None:
    events = list(output_events("z" * (CHUNK_CHARS + 1), chunked=True))
    assert [event.output.continued for event in events] == [True, False]
    assert _reassemble(events) == ["z" * (CHUNK_CHARS + 1)]


def test_only_callers_of_1_1_get_pieces() -> None:
    assert speaks_chunks("1.1") and speaks_chunks("1.12") and speaks_chunks("2.0")
    assert not speaks_chunks("1.0") and not speaks_chunks("") and not speaks_chunks("x.y")


def test_a_plugin_sending_endless_pieces_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_chunks, "MAX_REPLY_BYTES", 10)
    endless = (pb.InvokeEvent(result=pb.Result(text="abcd", continued=True)) for _ in range(1_000_000))
    with pytest.raises(CommandFailedError, match="sent a reply larger than"):
        list(invocation_items(endless, "hostile"))


def test_the_sdk_refuses_a_result_over_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    from sysops_sdk import _server

    monkeypatch.setattr(_server, "MAX_REPLY_BYTES", 5)
    runtime = PluginRuntime(EchoV1())
    runtime.plugin.initialize()
    [outcome] = list(runtime.run("echo", {"text": "too long"}))
    assert not isinstance(outcome, str)
    assert outcome.exit_code == 1 and outcome.error.startswith("reply larger than 64 MiB")


def test_arguments_that_are_not_utf8_or_too_big_are_usage_errors() -> None:
    undecodable = b"caf\xe9".decode("utf-8", "surrogateescape")  # how Python hands over a non-UTF-8 argv
    with pytest.raises(UsageError, match="greet: argument 'name' is not valid UTF-8") as caught:
        router.check_arguments("greet", {"name": undecodable})
    assert caught.value.exit_code == ExitCode.USAGE
    with pytest.raises(UsageError, match="argument 'tags' is not valid UTF-8"):
        router.check_arguments("greet", {"tags": ("ok", undecodable)})
    with pytest.raises(UsageError, match=r"greet: arguments are \d+ bytes as JSON, more than the 1048576 allowed"):
        router.check_arguments("greet", {"name": "x" * (1 << 20)})
    assert json.loads(router.check_arguments("greet", {"name": "日本", "n": 1})) == {"name": "日本", "n": 1}


def test_non_utf8_argv_exits_2_before_anything_is_sent(tmp_path: Any) -> None:
    code = (
        "import sys; from sysops.core.router import check_arguments; from sysops.cli.main import run_guarded; "
        "sys.exit(run_guarded(lambda: check_arguments('greet', {'name': sys.argv[1]})))"
    )
    done = subprocess.run([sys.executable, "-c", code, b"caf\xe9"], capture_output=True, timeout=30, check=False)
    assert done.returncode == ExitCode.USAGE
    assert done.stderr.decode().splitlines() == [
        "error: greet: argument 'name' is not valid UTF-8; pass text in UTF-8 (check the terminal's or file's encoding)"
    ]


def _route(*endpoints: str) -> Route:
    return Route("greet", "hello", b"", tuple((endpoint, "token") for endpoint in endpoints))


def test_a_call_refused_before_it_started_is_re_sent_to_the_successor(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def once(
        route: Route, endpoint: str, arguments: dict[str, Any], output: str, *_: object
    ) -> Iterator[str | InvocationResult]:
        calls.append(endpoint)
        if endpoint == "old":
            raise router._NotStarted(PluginUnavailableError("plugin 'hello' did not answer (plugin is shutting down)"))
        yield InvocationResult("text", "hi", None, 0, "")

    monkeypatch.setattr(router, "_call_once", once)
    [result] = list(router.call(_route("old"), {}, "text", lambda command: _route("new")))
    assert calls == ["old", "new"] and isinstance(result, InvocationResult) and result.text == "hi"


def test_re_sends_run_out_as_a_clear_unavailable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(route: Route, endpoint: str, arguments: dict[str, Any], output: str, *_: object) -> Iterator[str]:
        raise router._NotStarted(PluginUnavailableError("plugin 'hello' did not answer (plugin is shutting down)"))
        yield ""

    successors = iter(f"instance-{n}" for n in range(100))
    monkeypatch.setattr(router, "_call_once", refused)
    with pytest.raises(PluginUnavailableError, match="4 instances in a row were shutting down") as caught:
        list(router.call(_route("first"), {}, "text", lambda command: _route(next(successors))))
    assert caught.value.exit_code == ExitCode.PLUGIN_UNAVAILABLE
    assert "\n" not in str(caught.value)


def test_a_draining_runtime_counts_no_new_call() -> None:
    runtime = PluginRuntime(EchoV1())
    assert runtime.enter()  # a call in flight...
    runtime.draining = True
    assert not runtime.enter()  # ...and none after the drain began
    assert not runtime.wait_idle(0.05)
    runtime.leave()
    assert runtime.wait_idle(0.05)


class _AbortedError(Exception):
    pass


class _Context:
    """Enough of a grpc.ServicerContext to see how the control server ends a call."""

    def __init__(self) -> None:
        self.trailing: tuple[tuple[str, str], ...] = ()
        self.status: Any = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("sysops-protocol", "1.1"),)

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing = metadata

    def abort(self, status: Any, message: str) -> None:
        self.status = status
        raise _AbortedError(message)

    def add_callback(self, callback: Any) -> bool:
        return True


@pytest.mark.parametrize("arguments_json", ["{not json", "[1, 2]", '{"text": "\\udcff"}'])
def test_the_server_refuses_bad_arguments_with_exit_2_and_logs_it(
    settings: Any, arguments_json: str, caplog: pytest.LogCaptureFixture
) -> None:
    import grpc
    from sysops.runtime.fake import FakeDriver
    from sysops.server.protocol.v1 import control_pb2 as control_pb
    from sysops.server.service import ControlServicer

    context = _Context()
    servicer = ControlServicer(settings, FakeDriver(), None)
    request = control_pb.InvokeRequest(command="echo", arguments_json=arguments_json)
    with pytest.raises(_AbortedError):
        list(servicer.Invoke(request, context))  # type: ignore[arg-type]
    assert context.status == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(context.trailing) == {"sysops-exit-code": "2"}
    assert "Invoke of 'echo' refused" in caplog.text


def test_a_call_between_the_drain_check_and_its_count_never_runs_after_cleanup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hold a call right after it passed the point where it used to check draining, then drain: it must not run."""
    import threading
    import types

    from sysops_sdk import _server

    runtime = PluginRuntime(EchoV1())
    runtime.plugin.initialize()
    cleaned = threading.Event()
    parsing, drained = threading.Event(), threading.Event()

    def held_loads(text: str) -> Any:
        parsing.set()
        drained.wait(5)
        return json.loads(text)

    monkeypatch.setattr(_server, "json", types.SimpleNamespace(loads=held_loads, dumps=json.dumps))
    servicer = _server.PluginServicer(runtime, on_shutdown=None)
    outcome: list[Any] = []

    def call() -> None:
        request = pb.InvokeRequest(command="echo", arguments_json='{"text": "late"}')
        try:
            outcome.extend(servicer.Invoke(request, _PluginContext()))  # type: ignore[arg-type]
        except _AbortedError as refused:
            outcome.append(str(refused))
        outcome.append("after cleanup" if cleaned.is_set() else "before cleanup")

    caller = threading.Thread(target=call)
    caller.start()
    assert parsing.wait(5)
    runtime.draining = True  # what PluginServer.shutdown does, in this order
    assert runtime.wait_idle(1.0)
    cleaned.set()  # cleanup() ran
    drained.set()
    caller.join(5)
    assert outcome == ["plugin is shutting down", "after cleanup"]  # refused: it never ran


class _PluginContext(_Context):
    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


def _never_called(*_: object) -> None:
    raise AssertionError("the command is only asked for its help")


def test_plugin_help_texts_are_escaped() -> None:
    import click
    from sysops.cli.routed import build_command

    spec = pb.CommandSpec(
        name="evil",
        help=f"Looks nice {ATTACK}",
        params=[pb.ParamSpec(name="target", kind=pb.ParamSpec.ARGUMENT, type="str", help=ATTACK, metavar=ATTACK)],
    )
    from sysops.core.command_shape import shape_from_spec

    command = build_command(shape_from_spec("evil", "evil", spec.SerializeToString()), "evil", _never_called)
    shown = command.get_help(click.Context(command))
    assert "\x1b" not in shown and "\u202e" not in shown and "\\x1b]52;c;" in shown
