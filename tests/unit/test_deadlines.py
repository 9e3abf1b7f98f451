"""The deadline of a routed command: precedence, the operator's default, the manifest block, and the cause line."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sysops.core import router
from sysops.core.client import PluginClient
from sysops.core.deadlines import (
    DEFAULT_TIMEOUT_SECONDS,
    command_timeout,
    default_timeout,
    describe_overrun,
    stored_routes,
)
from sysops.core.manifest import parse_manifest
from sysops.errors import ExitCode, ManifestError, PluginUnavailableError, UsageError
from sysops.store import Route
from sysops_sdk.protocol.v1 import plugin_pb2 as pb

BASE = {"name": "slow", "version": "1.0.0", "entrypoint": "slow.plugin:P"}


def test_precedence_declared_then_environment_then_default() -> None:
    assert DEFAULT_TIMEOUT_SECONDS == 60
    assert default_timeout({}) == 60 and default_timeout({"SYSOPS_COMMAND_TIMEOUT": " 2.5 "}) == 2.5
    assert command_timeout(0.0, {}) == 60
    assert command_timeout(0.0, {"SYSOPS_COMMAND_TIMEOUT": "5"}) == 5
    assert command_timeout(7.0, {"SYSOPS_COMMAND_TIMEOUT": "5"}) == 7  # declared (code or manifest) wins


@pytest.mark.parametrize("bad", ["soon", "0", "-1", "inf", "nan", "86401"])
def test_a_bad_default_is_one_line_with_exit_2(bad: str) -> None:
    with pytest.raises(UsageError) as raised:
        default_timeout({"SYSOPS_COMMAND_TIMEOUT": bad})
    assert raised.value.exit_code == ExitCode.USAGE and "\n" not in str(raised.value)
    assert str(raised.value).startswith(f"SYSOPS_COMMAND_TIMEOUT={bad!r} is not a number of seconds")


def test_the_manifest_overrides_the_code_and_unknown_commands_are_refused() -> None:
    descriptor = pb.PluginDescriptor(
        commands=[pb.CommandSpec(name="nap", timeout_seconds=5), pb.CommandSpec(name="db migrate")]
    )
    manifest = parse_manifest({**BASE, "commands": {"db migrate": {"timeout_seconds": 300}}}, "plugin.yaml")
    routes = {
        name: pb.CommandSpec.FromString(spec).timeout_seconds
        for name, spec in stored_routes(manifest, descriptor).items()
    }
    assert routes == {"nap": 5, "db migrate": 300}
    typo = parse_manifest({**BASE, "commands": {"db migrat": {"timeout_seconds": 3}}}, "plugin.yaml")
    with pytest.raises(
        ManifestError, match=r"key 'commands\.db migrat' names no command of the plugin \(it has: db migrate, nap\)"
    ):
        stored_routes(typo, descriptor)


@pytest.mark.parametrize(
    ("commands", "message"),
    [
        ({"nap": {"timeout_seconds": 0}}, "key 'commands.nap.timeout_seconds': Input should be greater than 0"),
        ({"nap": {"timeout_seconds": True}}, "key 'commands.nap.timeout_seconds': Input should be a valid number"),
        ({"nap": {"timeout_seconds": 90_000}}, "less than or equal to 86400"),
        ({"nap": {"timeout": 3}}, "unknown key 'commands.nap.timeout' (allowed here: timeout_seconds)"),
        ({"Nap!": {"timeout_seconds": 3}}, "key 'commands.Nap!': must be a command name of lowercase words"),
        ({"nap": 3}, "key 'commands.nap': Input should be a valid dictionary"),
    ],
)
def test_bad_command_settings_are_one_line(commands: object, message: str) -> None:
    with pytest.raises(ManifestError) as raised:
        parse_manifest({**BASE, "commands": commands}, "plugin.yaml")
    assert str(raised.value).startswith("plugin.yaml: ") and message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_cause_names_a_death_or_a_wedge() -> None:
    assert describe_overrun(2, "OOMKilled (memory limit 64 MiB, peak 64 MiB)", "", None) == (
        "the instance OOMKilled (memory limit 64 MiB, peak 64 MiB)"
    )
    assert describe_overrun(2, None, "SERVING", (0, 64)) == "did not answer within 2s (health: SERVING)"
    assert describe_overrun(2.5, None, "no answer within 1s", (61, 64)) == (
        "did not answer within 2.5s (health: no answer within 1s; pids limit 64 hit 61 times since it started)"
    )
    assert describe_overrun(2, None, "NOT_SERVING", (1, 8)).endswith("pids limit 8 hit 1 time since it started)")


class _OddHealth(health.HealthServicer):
    """Answers with a status no ServingStatus names (proto3 enums are open: a plugin can send any number)."""

    def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> Any:
        return health_pb2.HealthCheckResponse(status=99)  # type: ignore[arg-type]


def test_a_health_status_with_no_name_is_not_serving_and_no_crash(tmp_path: Path) -> None:
    """healthy() (readiness, plugin status) and the deadline line read an unknown status as an answer."""
    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(_OddHealth(), server)
    endpoint = f"unix://{tmp_path}/plugin.sock"
    server.add_insecure_port(endpoint)
    server.start()
    try:
        with PluginClient(endpoint, "odd") as client:
            assert client.health(timeout=2) == "status 99"
            assert not client.healthy(timeout=2)
    finally:
        server.stop(0)


def test_the_deadline_spans_the_wait_for_a_hand_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call refused by a quiescing instance stops waiting for the hand-over when its deadline (1 s) ends,
    not after HANDOVER_WAIT_SECONDS (15 s)."""

    def quiescing(route: Route, endpoint: str, *_: object) -> Iterator[str]:
        raise router._NotStarted(PluginUnavailableError("plugin 'hello' did not answer (plugin is shutting down)"))
        yield ""

    spec = pb.CommandSpec(name="greet", timeout_seconds=1).SerializeToString()
    route = Route("greet", "hello", spec, (("old", "token"),))
    monkeypatch.setattr(router, "_call_once", quiescing)
    started = time.monotonic()
    with pytest.raises(PluginUnavailableError, match="plugin is shutting down"):
        list(router.call(route, {}, "text", lambda command: route))
    assert time.monotonic() - started < 1 + 2 * router.RETRY_SECONDS
