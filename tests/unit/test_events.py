"""Lifecycle events (issue 9 item 4): one vocabulary, bounded storage, follow by id, formatting, the Events RPC."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from sysops import store as store_module
from sysops.cli.contexts import ServerContext
from sysops.cli.events_cmd import JSON_KEYS, event_json, event_line, header
from sysops.cli.main import main
from sysops.cli.remote import RemoteClient
from sysops.core import events
from sysops.core.events import STATE_AFTER, EventKind
from sysops.core.orchestrator import Orchestrator
from sysops.errors import NotFoundError, StartFailedError, SysopsError, UsageError
from sysops.reserved import RESERVED_COMMANDS
from sysops.runtime.fake import FakeDriver
from sysops.server.protocol.v1 import control_pb2_grpc as pb_grpc
from sysops.server.service import ControlServicer
from sysops.settings import Settings
from sysops.store import EventRecord, Store
from sysops_sdk._server import TokenAuthInterceptor

from tests.unit.conftest import EchoV1
from tests.unit.test_rollout import _target

ORCHESTRATOR_SOURCES = Path(__file__).resolve().parents[2] / "orchestrator" / "sysops"
TOKEN = "t" * 24


def _kinds(orchestrator: Orchestrator, after: int = 0) -> list[str]:
    return [e.kind for e in orchestrator.events("echo") if e.id > after]


# one vocabulary
def test_the_vocabulary_has_the_lifecycle_states_and_the_transitions_of_issue_9() -> None:
    words = {"unloaded", "loaded", "active", "stopping", "failed"}
    words |= {"restarted", "rolled", "rolled-back", "oom-killed", "unresponsive"}
    assert words <= {kind.value for kind in EventKind}
    assert set(STATE_AFTER) == set(EventKind)


def test_every_recorder_goes_through_the_vocabulary() -> None:
    """Only core/events.py writes events (its `record` takes an EventKind, which mypy checks)."""
    writers = [
        path.relative_to(ORCHESTRATOR_SOURCES).as_posix()
        for path in ORCHESTRATOR_SOURCES.rglob("*.py")
        if "add_event(" in path.read_text() and path.name != "store.py"
    ]
    assert writers == ["core/events.py"]
    recorded = set()
    for path in ORCHESTRATOR_SOURCES.rglob("*.py"):
        recorded |= set(re.findall(r"EventKind\.([A-Z_]+)", path.read_text()))
    assert recorded - {"UNRESPONSIVE"} <= set(EventKind.__members__)


# transitions recorded, in order
def test_a_roll_and_a_failed_roll_are_recorded_in_order(orchestrator: Orchestrator) -> None:
    orchestrator.rollout.roll(_target("echo-v1"))
    assert _kinds(orchestrator) == ["loaded", "active"]
    first = orchestrator.store.events("echo")
    orchestrator.rollout.roll(_target("echo-v2", version="2.0.0"))
    assert _kinds(orchestrator, first[-1].id) == ["loaded", "rolled"]
    assert orchestrator.store.events("echo")[-1].message.startswith("1.0.0 -> 2.0.0 (revision 2) serving")
    mark = orchestrator.store.events("echo")[-1].id
    with pytest.raises(StartFailedError):
        orchestrator.rollout.roll(_target("broken", version="3.0.0"))
    assert _kinds(orchestrator, mark) == ["loaded", "rolled-back"]
    rolled_back = orchestrator.store.events("echo")[-1]
    assert "database unreachable" in rolled_back.message and "2.0.0 (revision 2) keeps serving" in rolled_back.message
    mark = rolled_back.id
    orchestrator.rollback("echo")
    assert _kinds(orchestrator, mark) == ["loaded", "rolled"]
    assert "`plugin rollback`" in orchestrator.store.events("echo")[-1].message
    mark = orchestrator.store.events("echo")[-1].id
    orchestrator.down("echo")
    assert _kinds(orchestrator, mark) == ["stopping", "unloaded"]
    ids = [e.id for e in orchestrator.events("echo")]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_a_failed_first_install_is_recorded_failed(orchestrator: Orchestrator) -> None:
    with pytest.raises(StartFailedError):
        orchestrator.rollout.roll(_target("broken", version="3.0.0"))
    assert _kinds(orchestrator) == ["loaded", "failed"]


def test_engine_restarts_and_oom_kills_are_recorded_once_each(orchestrator: Orchestrator) -> None:
    instance = orchestrator.rollout.roll(_target("echo-v1"))
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    fake = driver.instances[instance.handle]
    fake.status = replace(fake.status, restart_count=1)
    orchestrator.status("echo")
    orchestrator.status("echo")
    fake.status = replace(fake.status, restart_count=2)
    orchestrator.status("echo")
    restarts = [e.message for e in orchestrator.store.events("echo") if e.kind == "restarted"]
    assert len(restarts) == 2 and restarts[-1].endswith(", restart 2)"), restarts
    driver.crash(instance.handle, exit_code=137, oom_killed=True)
    fake.status = replace(fake.status, restart_count=3)
    orchestrator.status("echo")
    orchestrator.status("echo")
    assert _kinds(orchestrator)[-2:] == ["oom-killed", "failed"]


def test_an_engine_restart_after_a_supervisor_restart_is_recorded(orchestrator: Orchestrator) -> None:
    """A supervisor restart (or a stable run) zeroes the engine's count: the next crash is 'restart 1' again."""
    instance = orchestrator.rollout.roll(_target("echo-v1"))
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    fake = driver.instances[instance.handle]

    def started(seconds_ago: float) -> str:
        return datetime.fromtimestamp(time.time() - seconds_ago, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    fake.status = replace(fake.status, restart_count=1, started_at=started(60))
    orchestrator.status("echo")
    orchestrator.status("echo")
    time.sleep(0.01)
    fake.status = replace(fake.status, restart_count=0, started_at=started(0))  # `docker restart` by the supervisor
    orchestrator.status("echo")
    time.sleep(0.01)
    fake.status = replace(fake.status, restart_count=1, started_at=started(0))  # it crashed; the engine restarted it
    orchestrator.status("echo")
    orchestrator.status("echo")
    restarts = [e.message for e in orchestrator.store.events("echo") if e.kind == "restarted"]
    assert len(restarts) == 2 and all(m.endswith(", restart 1)") for m in restarts), restarts
    driver.crash(instance.handle, exit_code=137, oom_killed=True)  # seen while the engine restarts it
    orchestrator.status("echo")
    time.sleep(0.01)
    fake.status = replace(fake.status, running=True, restart_count=2, started_at=started(0))  # OOMKilled stays
    orchestrator.status("echo")
    assert _kinds(orchestrator).count("oom-killed") == 1, "one OOM kill, one event, before and after its restart"


def test_a_plugin_cannot_make_an_event_as_long_as_it_likes(orchestrator: Orchestrator) -> None:
    """The reason of a failed start quotes the plugin (its last line); 1 MB of it was stored whole per event."""

    class Verbose(EchoV1):
        def initialize(self) -> None:
            raise RuntimeError("x" * 1_000_000)

    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    driver.add_image("verbose", Verbose)
    with pytest.raises(StartFailedError):
        orchestrator.rollout.roll(_target("verbose"))
    (failed,) = [e for e in orchestrator.store.events("echo") if e.kind == "failed"]
    assert len(failed.message) <= events.MESSAGE_CAP + 100 and failed.message.endswith("more characters)")


# bounded storage, ids
def test_storage_keeps_the_last_events_per_plugin_and_in_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "EVENTS_PER_PLUGIN", 5)
    monkeypatch.setattr(store_module, "EVENTS_TOTAL", 8)
    store = Store(tmp_path / "state.db")
    for number in range(12):
        events.record(store, "a", EventKind.LOADED, f"a{number}")
    assert [e.message for e in store.events("a", limit=100)] == [f"a{n}" for n in range(7, 12)]
    for number in range(6):
        events.record(store, "b", EventKind.LOADED, f"b{number}")
    everything = store.events_after(0, limit=100)
    assert len(everything) == 8 and [e.message for e in everything][:3] == ["a9", "a10", "a11"]
    assert [e.id for e in everything] == sorted(e.id for e in everything)
    assert everything[-1].id == 18
    store.db.execute("DELETE FROM events")
    events.record(store, "a", EventKind.ACTIVE, "later")
    assert store.events("a")[-1].id == 19  # ids are never reused after deletion (a follower reads by id)
    store.close()


def test_a_follower_sees_events_as_they_are_stored_and_stops_at_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    events.record(store, "a", EventKind.LOADED, "before")
    events.record(store, "b", EventKind.LOADED, "other plugin")
    stop = threading.Event()
    seen: list[EventRecord] = []

    def follow() -> None:
        reader = Store(tmp_path / "state.db")  # another connection, as another process would be
        seen.extend(events.read_events(reader, "a", follow=True, stop=stop, poll_seconds=0.05))
        reader.close()

    thread = threading.Thread(target=follow)
    thread.start()
    time.sleep(0.2)
    events.record(store, "a", EventKind.ACTIVE, "after")
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    stopped = time.monotonic()
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - stopped < 1
    assert [(e.kind, e.message) for e in seen] == [("loaded", "before"), ("active", "after")]
    store.close()


def test_a_large_backlog_is_read_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "BATCH", 3)
    store = Store(tmp_path / "state.db")
    for number in range(10):
        events.record(store, "a", EventKind.LOADED, str(number))
    assert [e.message for e in events.read_events(store)] == [str(n) for n in range(10)]
    assert [e.message for e in events.read_events(store, after=store.events("a")[7].id)] == ["8", "9"]
    store.close()


# formatting
def test_text_rows_are_aligned_and_escaped() -> None:
    hostile = "boom \x1b]52;c;ZXZpbA==\x07\nforged line\r"
    rows = [
        header(16),
        event_line(1_700_000_000, "loaded", "1.0.0 started", "echo", 16),
        event_line(1_700_000_001, "rolled-back", hostile, "a-longer-name", 16),
    ]
    assert all("\x1b" not in row and "\n" not in row and "\r" not in row and "\x07" not in row for row in rows)
    assert "\\x1b]52" in rows[2] and "forged line" in rows[2]
    for column in ("PLUGIN", "KIND", "MESSAGE"):
        offset = rows[0].index(column)
        assert all(row[offset - 2 : offset] == "  " and row[offset] != " " for row in rows[1:]), (column, rows)
    assert rows[1].startswith("2023-11-14 22:13:20  echo")


def test_json_lines_have_stable_keys_and_escape_control_characters() -> None:
    event = EventRecord("echo", 1_700_000_000.25, "rolled", "a\x1b[2Jb\nc", 7)
    line = event_json(event)
    assert "\n" not in line and "\x1b" not in line
    data = json.loads(line)
    assert tuple(data) == JSON_KEYS
    assert data == {
        "id": 7,
        "time": "2023-11-14T22:13:20Z",
        "unix_time": 1_700_000_000.25,
        "plugin": "echo",
        "kind": "rolled",
        "message": "a\x1b[2Jb\nc",
    }


# the command line
def test_events_is_a_reserved_word() -> None:
    assert "events" in RESERVED_COMMANDS


def test_cli_prints_the_events_and_refuses_bad_names(
    control_host: Orchestrator, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store(settings.store_path)
    events.record(store, "echo", EventKind.LOADED, "1.0.0 started")
    events.record(store, "echo", EventKind.ACTIVE, "1.0.0 serving")
    store.close()
    assert main(["events", "--plugin", "echo"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["TIME", "PLUGIN", "KIND", "MESSAGE"] and [line.split()[3] for line in out[1:]] == [
        "loaded",
        "active",
    ]
    assert main(["events", "-o", "json"]) == 0
    assert [json.loads(line)["kind"] for line in capsys.readouterr().out.splitlines()] == ["loaded", "active"]
    assert main(["events", "--plugin", "Bad/Name"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "invalid plugin name" in captured.err
    assert main(["events", "--plugin", "nothing"]) == 8
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "error: no plugin named 'nothing'; `sysops plugin ls` lists them\n"


# the control API
@pytest.fixture
def control(settings: Settings) -> Iterator[tuple[ControlServicer, int]]:
    servicer = ControlServicer(settings, FakeDriver(), None, max_followers=1)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[TokenAuthInterceptor(TOKEN)])
    pb_grpc.add_ControlServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(None)


def test_the_events_rpc_lists_follows_and_frees_its_slot_on_cancel(
    control: tuple[ControlServicer, int], settings: Settings
) -> None:
    servicer, port = control
    store = Store(settings.store_path)
    events.record(store, "echo", EventKind.LOADED, "1.0.0 started")
    client = RemoteClient(ServerContext("test", f"127.0.0.1:{port}", TOKEN, insecure=True))
    assert [e.kind for e in client.events("echo")] == ["loaded"]
    followed = client.events(None, follow=True)
    assert next(followed).kind == "loaded"
    events.record(store, "echo", EventKind.ACTIVE, "1.0.0 serving")
    second = next(followed)
    assert (second.kind, second.plugin, second.message) == ("active", "echo", "1.0.0 serving") and second.id > 1
    with pytest.raises(SysopsError, match="already serves 1 followed streams"):  # the one slot is taken
        next(client.events(None, follow=True))
    followed.close()  # the client cancels: the server's worker returns the slot within one poll
    deadline = time.monotonic() + 3
    while not servicer.follower_slots.acquire(blocking=False):
        assert time.monotonic() < deadline, "the cancelled follow kept its slot"
        time.sleep(0.05)
    servicer.follower_slots.release()
    with pytest.raises(SysopsError) as refused:
        list(client.events("Bad/Name"))
    assert refused.value.exit_code == 2
    with pytest.raises(SysopsError) as missing:
        list(client.events("nothing"))
    assert missing.value.exit_code == 8
    client.close()
    stranger = RemoteClient(ServerContext("test", f"127.0.0.1:{port}", "wrong-token-wrong-token", insecure=True))
    with pytest.raises(SysopsError, match="refused the token"):
        list(stranger.events())
    stranger.close()
    store.close()


def test_not_found_is_only_for_a_plugin_never_seen(orchestrator: Orchestrator) -> None:
    with pytest.raises(NotFoundError):
        list(orchestrator.events("echo"))
    with pytest.raises(UsageError):
        list(orchestrator.events("../echo"))
    stop = threading.Event()
    stop.set()
    assert list(orchestrator.events("echo", follow=True, stop=stop)) == []  # a follow waits for it instead


def test_ctrl_c_ends_a_follow_with_exit_130(control_host: Orchestrator, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> Iterator[EventRecord]:
        raise KeyboardInterrupt
        yield  # a generator, as the real one

    monkeypatch.setattr(RemoteClient, "events", interrupted)  # Ctrl-C lands in the CLI, reading the host's stream
    assert main(["events", "-f"]) == 130
