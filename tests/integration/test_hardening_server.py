"""Hardening of `sysops serve` against the real Docker engine: followed log streams cannot wedge the
control API, reconciliation outlives faults and forged labels, replies carry no secrets, and one server's
purge cannot untag another server's image.

The servers run in this process (so a test can inject a fault into their reconcile loop); the CLI runs as
a subprocess against them, as a user's would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import grpc
import pytest
from sysops.core.manifest import load_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.server.protocol.v1 import control_pb2 as pb
from sysops.server.protocol.v1 import control_pb2_grpc as pb_grpc
from sysops.server.service import ControlServer, serve
from sysops.settings import Settings

from tests.integration.conftest import Sysops, copy_example, remove_installation, wait_for

pytestmark = pytest.mark.integration
TOKEN = "hardening-test-token-0123456789"
METADATA = (("authorization", f"Bearer {TOKEN}"),)
FOLLOWERS = 64
#: How long an ordinary call may take while followers stream, or after they were cancelled.
PROMPT_SECONDS = 2.0
BASE_IMAGE = "sysops/plugin-base:0.1.0"


@dataclass
class Served:
    """An in-process control server, the CLI pointed at it, and a raw authenticated stub."""

    server: ControlServer
    settings: Settings
    cli: Sysops
    plugin_dir: Path
    channel: grpc.Channel

    @property
    def stub(self) -> pb_grpc.ControlStub:
        return pb_grpc.ControlStub(self.channel)

    def query(self, kind: str, name: str = "") -> Any:
        reply = self.stub.Query(pb.QueryRequest(kind=kind, name=name), metadata=METADATA, timeout=PROMPT_SECONDS)
        return json.loads(reply.json)


@contextlib.contextmanager
def running_server(engine: docker.DockerClient, root: Path) -> Iterator[Served]:
    """A server with hello up, rolled through the CLI; everything of its installation removed afterwards."""
    settings = Settings(home=root / "server-home", ready_timeout=20.0, drain_timeout=3.0)
    server = serve("127.0.0.1:0", "docker", TOKEN, settings, reconcile_seconds=0.5)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    cli_home = root / "client-home"
    env = {
        **os.environ,
        "SYSOPS_HOME": str(cli_home),
        "SYSOPS_SERVER": f"127.0.0.1:{server.port}",
        "SYSOPS_TOKEN": TOKEN,
        "SYSOPS_INSECURE": "1",  # the test server is plaintext
    }
    served = Served(server, settings, Sysops(home=cli_home, env=env), copy_example("hello", root), channel)
    try:
        served.cli.ok("plugin", "up", str(served.plugin_dir))
        yield served
    finally:
        channel.close()
        server.stop(grace=1).wait()
        remove_installation(engine, settings.installation_id)
        repository = f"sysops-plugins/{settings.installation_id}-hello"
        for image in engine.images.list(name=repository):
            for tag in image.tags:  # untag only: other installations may share the image's content
                if tag.startswith(f"{repository}:"):
                    with contextlib.suppress(docker.errors.NotFound):
                        engine.images.remove(tag)


@pytest.fixture(scope="module")
def served(engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with running_server(engine, tmp_path_factory.mktemp("served")) as instance:
        yield instance


def _follow(served: Served, count: int) -> tuple[list[Any], list[str]]:
    """Start `count` followers of hello's logs; wait (bounded) until each has its first line."""
    calls = [
        served.stub.Logs(pb.LogsRequest(name="hello", follow=True, tail=1), metadata=METADATA) for _ in range(count)
    ]
    first_lines: list[str] = []

    def first_line(call: Any) -> None:
        try:
            first_lines.append(next(call).text)
        except grpc.RpcError as error:  # named in the failing assertion
            first_lines.append(f"error: {error.code().name}: {error.details()}")

    readers = [threading.Thread(target=first_line, args=(call,), daemon=True) for call in calls]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + 30
    for reader in readers:
        reader.join(timeout=max(0.0, deadline - time.monotonic()))
    return calls, first_lines


def _timed_list(served: Served) -> float:
    started = time.monotonic()
    assert [plugin["name"] for plugin in served.query("list")] == ["hello"]
    return time.monotonic() - started


def test_cancelled_followers_free_their_workers_at_once(served: Served) -> None:
    calls, first_lines = _follow(served, FOLLOWERS)
    for call in calls:
        call.cancel()
    took = _timed_list(served)  # the plugin is idle: no log line will come to wake a wedged follower
    assert len(first_lines) == FOLLOWERS, f"only {len(first_lines)} of {FOLLOWERS} followers were served"
    assert all("serving on" in line for line in first_lines), first_lines
    assert took < PROMPT_SECONDS
    anonymous = pb_grpc.ControlStub(served.channel)
    with pytest.raises(grpc.RpcError) as refused:
        anonymous.Query(pb.QueryRequest(kind="list"), timeout=PROMPT_SECONDS)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # the cancelled streams were closed, not abandoned: every follower slot is free again
    again, again_lines = _follow(served, FOLLOWERS)
    for call in again:
        call.cancel()
    assert len(again_lines) == FOLLOWERS and all("serving on" in line for line in again_lines), again_lines


def test_live_followers_do_not_block_other_calls_and_are_capped(served: Served) -> None:
    calls, first_lines = _follow(served, FOLLOWERS)
    try:
        assert len(first_lines) == FOLLOWERS
        assert all("serving on" in line for line in first_lines), first_lines
        assert _timed_list(served) < PROMPT_SECONDS
        logs = served.stub.Logs(pb.LogsRequest(name="hello", tail=5), metadata=METADATA, timeout=PROMPT_SECONDS)
        assert any("serving on" in line.text for line in logs)
        one_too_many = served.stub.Logs(pb.LogsRequest(name="hello", follow=True), metadata=METADATA)
        with pytest.raises(grpc.RpcError) as refused:
            next(one_too_many)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"already follows {FOLLOWERS} log streams" in str(refused.value.details())
        assert ("sysops-exit-code", "5") in tuple(refused.value.trailing_metadata() or ())
    finally:
        for call in calls:
            call.cancel()
    unknown = served.stub.Logs(pb.LogsRequest(name="nope", follow=True), metadata=METADATA)
    with pytest.raises(grpc.RpcError) as missing:
        next(unknown)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_reconcile_outlives_a_fault_and_a_forged_label(
    served: Served, engine: docker.DockerClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    installation = served.settings.installation_id
    original = Orchestrator.reconcile
    injected = threading.Event()

    def fails_once(orchestrator: Orchestrator) -> None:
        if not injected.is_set():
            injected.set()
            raise RuntimeError("injected reconcile fault")
        original(orchestrator)

    monkeypatch.setattr(Orchestrator, "reconcile", fails_once)
    wait_for(injected.is_set, 10, "the reconcile loop to hit the injected fault")

    def sleeper(plugin_label: str) -> Any:
        return engine.containers.run(
            BASE_IMAGE,
            ["600"],
            entrypoint=["sleep"],
            labels={"sysops.installation": installation, "sysops.plugin": plugin_label, "sysops.instance": "x1"},
            network_mode="none",
            detach=True,
        )

    forged = sleeper("a/b")
    time.sleep(1.5)  # a few passes over the forged label
    orphan = sleeper("orphan")
    try:

        def orphan_removed() -> bool:
            try:
                engine.containers.get(orphan.id)
            except docker.errors.NotFound:
                return True
            return False

        wait_for(orphan_removed, 20, "the reconcile loop to remove an orphan after the fault and the forged label")
        forged.reload()
        assert forged.status == "running"  # not a plugin name: ignored, not acted on
        messages = [(record.getMessage(), record.exc_info) for record in caplog.records]
        assert any("injected reconcile fault" in text and exc_info for text, exc_info in messages), messages
        assert any("sysops.plugin='a/b': not a valid plugin name" in text for text, _ in messages), messages
    finally:
        for container in (forged, orphan):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


def test_replies_carry_no_token_or_socket_path(served: Served) -> None:
    [revision] = served.query("history", "hello")
    manifest = load_manifest(served.plugin_dir)
    up = served.stub.Up(
        pb.UpRequest(
            manifest_json=manifest.model_dump_json(),
            image=revision["image"],
            fingerprint=revision["fingerprint"],
            source=str(served.plugin_dir.resolve()),
        ),
        metadata=METADATA,
    )
    rollback = served.stub.Rollback(pb.RollbackRequest(name="hello", to=1), metadata=METADATA)
    for reply in (up, rollback):
        [done] = [progress for progress in reply if progress.done]
        result = json.loads(done.result_json)
        instance = result.get("instance", result)
        assert instance["plugin"] == "hello" and instance["revision"] >= 1
        assert not {"token", "socket_dir", "endpoint"} & set(instance), instance
        assert "plugin.sock" not in done.result_json and str(served.settings.home) not in done.result_json
    assert served.cli.ok("greet", "again") == "Hello, again!\n"


def test_up_refuses_another_installations_image(served: Served) -> None:
    [revision] = [r for r in served.query("history", "hello") if r["revision"] == 1]
    foreign = revision["image"].replace(served.settings.installation_id, "0" * 12)
    up = served.stub.Up(
        pb.UpRequest(
            manifest_json=load_manifest(served.plugin_dir).model_dump_json(),
            image=foreign,
            fingerprint="f" * 64,
            source=str(served.plugin_dir.resolve()),
        ),
        metadata=METADATA,
    )
    with pytest.raises(grpc.RpcError) as refused:
        list(up)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a plugin image of this server" in str(refused.value.details())


def test_a_purge_on_one_server_keeps_another_servers_image(
    served: Served, engine: docker.DockerClient, tmp_path: Path
) -> None:
    kept = served.query("history", "hello")[0]["image"]
    with running_server(engine, tmp_path) as other:
        purged = other.query("history", "hello")[0]["image"]
        other_label = f"sysops.installation={other.settings.installation_id}"
        assert engine.images.get(purged).labels["sysops.installation"] == other.settings.installation_id
        other.cli.ok("plugin", "down", "hello", "--purge")
        with pytest.raises(docker.errors.ImageNotFound):
            engine.images.get(purged)
        assert engine.images.list(filters={"label": other_label}) == []  # its build layers went too
        assert kept in engine.images.get(kept).tags
        assert engine.images.get(kept).labels["sysops.installation"] == served.settings.installation_id
        served.cli.ok("plugin", "rollback", "hello", "--to", "1")
    assert kept.startswith(f"sysops-plugins/{served.settings.installation_id}-hello:")
    assert purged.startswith(f"sysops-plugins/{other.settings.installation_id}-hello:")
