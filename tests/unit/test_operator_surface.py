"""The operator's surface of the host services through a `sysops serve` in this process (fake driver, TCP, tokens):
caller roles, `plugin permissions`, `plugin config [set]`, `metrics` and `/metrics`, `alerts`, `events publish`."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from sysops.cli.main import main
from sysops.core import router
from sysops.core.manifest import parse_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.core.rollout import RollTarget
from sysops.errors import ExitCode
from sysops.runtime.fake import FakeDriver
from sysops.server.protocol.v1 import control_pb2 as pb
from sysops.server.protocol.v1 import control_pb2_grpc as pb_grpc
from sysops.server.roles import EXIT_CODE_METADATA_KEY
from sysops.server.service import ControlServer, serve
from sysops.services.dispatch import HostServices
from sysops.settings import Settings
from sysops.store import Route
from sysops_sdk import Plugin, plugin_command
from sysops_sdk.protocol.v1 import plugin_pb2 as plugin_pb

ADMIN_TOKEN = "server-admin-token-0123456789"
TOKENS = {"alice": "alice-viewer-token", "bob": "bob-operator-token", "carol": "carol-admin-token"}
ROLES = {"alice": "viewer", "bob": "operator", "carol": "admin"}


class Ops(Plugin):
    name = "ops"
    version = "1.0.0"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("peek", read_only=True)
    def peek(self) -> str:
        return "peeked"

    @plugin_command("deploy")
    def deploy(self) -> str:
        return "deployed"


@dataclass
class Served:
    server: ControlServer
    services: HostServices
    published: list[tuple[str, Any, str]]
    driver: FakeDriver

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


def _policy() -> str:
    callers = [
        {"name": name, "token_sha256": hashlib.sha256(token.encode()).hexdigest(), "role": ROLES[name]}
        for name, token in TOKENS.items()
    ]
    policy = {
        "plugins": {"ops": {"grants": ["metrics.*", "state.read"], "config": {"threshold": 80}}},
        "callers": callers,
    }
    return json.dumps(policy)


@pytest.fixture
def served(settings: Settings, orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """A TCP control server over the fake driver with `ops` serving, host services attached, /metrics on."""
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "policy.yaml").write_text(_policy())
    assert isinstance(orchestrator.driver, FakeDriver)
    orchestrator.driver.add_image("ops-v1", Ops)
    manifest = parse_manifest(
        {
            "name": "ops",
            "version": "1.0.0",
            "entrypoint": "x:Y",
            "permissions": ["metrics.write", "state.read", "system.deploy"],
            "config": {"threshold": {"type": "int", "default": 90, "help": "Alert above this percent"}},
        },
        "test",
    )
    orchestrator.rollout.roll(RollTarget(manifest, "ops-v1", "ops-v1", "fp-ops", "/src/ops"))
    server = serve("127.0.0.1:0", "docker", ADMIN_TOKEN, settings, driver=orchestrator.driver, metrics_port=0)
    services = HostServices(settings, settings.store_path)
    published: list[tuple[str, Any, str]] = []

    def publish(topic: str, payload: Any, publisher: str) -> int:
        published.append((topic, payload, publisher))
        return len(published)

    assert server.servicer is not None
    server.servicer.attach_host_services(services, publish)
    served = Served(server, services, published, orchestrator.driver)
    monkeypatch.setenv("SYSOPS_SERVER", served.address)
    monkeypatch.setenv("SYSOPS_INSECURE", "1")  # the test server is plaintext
    monkeypatch.setenv("SYSOPS_TOKEN", ADMIN_TOKEN)
    yield served
    server.stop(0).wait(5)
    services.close()


def as_caller(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("SYSOPS_TOKEN", TOKENS[name])


def test_viewer_may_not_up_down_or_rollback(served: Served, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    with grpc.insecure_channel(served.address) as channel:
        stub = pb_grpc.ControlStub(channel)
        metadata = (("authorization", f"Bearer {TOKENS['alice']}"),)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Up(pb.UpRequest(manifest_json="{}", image="x"), metadata=metadata))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details() == "caller 'alice' (role viewer) may not run plugin up; it needs role admin"
    assert dict(refused.value.trailing_metadata())[EXIT_CODE_METADATA_KEY] == "9"
    as_caller(monkeypatch, "alice")
    assert main(["plugin", "down", "ops"]) == ExitCode.POLICY_DENIED
    assert main(["plugin", "rollback", "ops"]) == ExitCode.POLICY_DENIED
    err = capsys.readouterr().err
    assert "error: caller 'alice' (role viewer) may not run plugin down; it needs role admin\n" in err
    assert "may not run plugin rollback" in err
    assert main(["plugin", "ls"]) == 0  # viewers see everything
    assert "ops" in capsys.readouterr().out
    assert served.driver.instances  # still running


def test_viewer_runs_a_read_only_command_only(served: Served, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    as_caller(monkeypatch, "alice")
    assert main(["peek"]) == 0
    assert capsys.readouterr().out == "peeked\n"
    assert main(["deploy"]) == ExitCode.POLICY_DENIED
    assert capsys.readouterr().err == (
        "error: caller 'alice' (role viewer) may not run command 'deploy'; it needs role operator\n"
    )


def test_operator_runs_any_command_but_only_admin_takes_a_plugin_down(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    as_caller(monkeypatch, "bob")
    assert main(["deploy"]) == 0
    assert capsys.readouterr().out == "deployed\n"
    assert main(["plugin", "down", "ops"]) == ExitCode.POLICY_DENIED
    assert "caller 'bob' (role operator) may not run plugin down; it needs role admin" in capsys.readouterr().err
    as_caller(monkeypatch, "carol")
    assert main(["plugin", "down", "ops"]) == 0
    assert not served.driver.instances


def test_unknown_token_is_unauthenticated_and_health_stays_open(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    with grpc.insecure_channel(served.address) as channel:
        stub = pb_grpc.ControlStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Query(pb.QueryRequest(kind="list"), metadata=(("authorization", "Bearer nobody-knows-this"),))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    monkeypatch.setenv("SYSOPS_TOKEN", "nobody-knows-this")
    assert main(["plugin", "ls"]) == ExitCode.ENGINE_UNAVAILABLE
    assert "refused the token" in capsys.readouterr().err


def test_plugin_permissions_table_and_json(served: Served, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    as_caller(monkeypatch, "alice")
    assert main(["plugin", "permissions", "ops"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["PERMISSION", "ASKED", "STATUS", "GRANT"]
    assert [line.split() for line in lines[1:]] == [
        ["metrics.write", "yes", "granted", "metrics.*"],
        ["state.read", "yes", "granted", "state.read"],
        ["system.deploy", "yes", "refused", "-"],
    ]
    assert main(["plugin", "permissions", "ops", "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["granted"] == ["metrics.write", "state.read"] and report["refused"] == ["system.deploy"]
    assert main(["plugin", "permissions", "Bad/Name"]) == ExitCode.USAGE


def test_plugin_config_show_and_set(served: Served, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    assert main(["plugin", "config", "ops"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["KEY", "VALUE", "SOURCE", "HELP"]
    assert lines[1].split() == ["threshold", "80", "policy", "Alert", "above", "this", "percent"]
    assert main(["plugin", "config", "ops", "set", "threshold", "95"]) == 0
    assert main(["plugin", "config", "ops", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["keys"][0] | {"help": ""} == {
        "key": "threshold",
        "value": 95,
        "source": "set",
        "help": "",
    }
    assert main(["plugin", "config", "ops", "set", "threshold", "high"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plugin 'ops' config key 'threshold'" in err
    assert main(["plugin", "config", "ops", "set", "nokey", "1"]) == ExitCode.USAGE
    assert main(["plugin", "config", "ops", "put", "threshold", "1"]) == ExitCode.USAGE
    assert main(["plugin", "config", "ops", "set", "threshold"]) == ExitCode.USAGE
    capsys.readouterr()
    as_caller(monkeypatch, "bob")
    assert main(["plugin", "config", "ops", "set", "threshold", "70"]) == ExitCode.POLICY_DENIED
    assert "caller 'bob' (role operator) may not set plugin config; it needs role admin" in capsys.readouterr().err
    assert served.services.config.values("ops") == {"threshold": 95}


def test_events_publish(served: Served, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    as_caller(monkeypatch, "bob")
    assert main(["events", "publish", "deploy.done", '{"service": "web"}']) == 0
    assert capsys.readouterr().out == "1\n"
    assert served.published == [("deploy.done", {"service": "web"}, "operator")]
    assert main(["events", "publish", "deploy.done", "{service: web}"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert (
        err.startswith("error: events publish 'deploy.done': the payload is not valid JSON (") and err.count("\n") == 1
    )
    assert main(["events", "publish", "sysops.lifecycle", "{}"]) == ExitCode.POLICY_DENIED
    assert main(["events", "publish", "Bad Topic", "{}"]) == ExitCode.USAGE
    as_caller(monkeypatch, "alice")
    assert main(["events", "publish", "deploy.done", "1"]) == ExitCode.POLICY_DENIED
    assert "caller 'alice' (role viewer) may not publish events; it needs role operator" in capsys.readouterr().err
    assert len(served.published) == 1
    assert main(["events", "--plugin", "ops"]) == 0  # the listing still works beside the subcommand


def test_metrics_command_and_endpoint(served: Served, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    served.services.metrics.record_call("ops", "deploy", 0.25, True)
    served.services.metrics.record_call("other", "greet", 0.1, False)
    as_caller(monkeypatch, "alice")
    assert main(["metrics"]) == 0
    text = capsys.readouterr().out
    assert 'sysops_calls_total{command="deploy",outcome="ok",plugin="ops"} 1.0' in text
    assert 'plugin="other"' in text
    assert main(["metrics", "--plugin", "ops"]) == 0
    only = capsys.readouterr().out
    assert 'plugin="ops"' in only and 'plugin="other"' not in only and "# TYPE sysops_calls_total counter" in only
    assert served.server.metrics is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{served.server.metrics.port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        scraped = reply.read().decode()
    assert 'sysops_calls_total{command="deploy",outcome="ok",plugin="ops"} 1.0' in scraped


def test_alerts_list_and_resolve(served: Served, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    served.services.alerts.raise_alert("ops", "disk-full", "critical", "disk at 97%\nsecond line")
    as_caller(monkeypatch, "alice")
    assert main(["alerts"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["PLUGIN", "NAME", "SEVERITY", "STATE", "RAISED", "RESOLVED", "MESSAGE"]
    assert lines[1].split()[:4] == ["ops", "disk-full", "critical", "open"]
    assert lines[1].endswith("disk at 97% second line")
    assert main(["alerts", "resolve", "ops", "disk-full"]) == ExitCode.POLICY_DENIED
    as_caller(monkeypatch, "bob")
    assert main(["alerts", "resolve", "ops", "disk-full"]) == 0
    assert "ops: alert disk-full resolved" in capsys.readouterr().err
    assert main(["alerts"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # only the header: nothing open
    assert main(["alerts", "--all", "-o", "json"]) == 0
    [alert] = json.loads(capsys.readouterr().out)
    assert alert["name"] == "disk-full" and alert["open"] is False
    assert main(["alerts", "--all"]) == 0
    [_, row] = capsys.readouterr().out.splitlines()
    assert row.split()[:4] == ["ops", "disk-full", "critical", "resolved"]
    assert "-" not in row.split()[4:8]  # raised and resolved times are shown


class RecordingHooks:
    """Routing hooks that record the principal each call names (and send it as the CallerIdentity)."""

    def __init__(self) -> None:
        self.principals: list[str] = []

    def admit(self, route: Route, permissions: Sequence[str], principal: str) -> plugin_pb.CallerIdentity:
        self.principals.append(principal)
        return plugin_pb.CallerIdentity(principal=principal)

    def finished(self, route: Route, seconds: float, ok: bool) -> None:
        pass


def test_the_caller_travels_to_the_plugin_as_its_principal(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    hooks = RecordingHooks()
    previous = router.set_routing_hooks(hooks)
    try:
        as_caller(monkeypatch, "alice")
        assert main(["peek"]) == 0
        as_caller(monkeypatch, "bob")
        assert main(["deploy"]) == 0
        monkeypatch.setenv("SYSOPS_TOKEN", ADMIN_TOKEN)
        assert main(["peek"]) == 0
    finally:
        router.set_routing_hooks(previous)
    assert hooks.principals == ["user:alice", "user:bob", "user:admin"]


def test_the_local_host_socket_is_its_owner_an_admin(control_host: Orchestrator, capsys: Any) -> None:
    """No token on the resident host's 0600 socket: its caller may do everything an admin may."""
    assert main(["events", "publish", "deploy.done", '{"service": "web"}']) == 0
    assert capsys.readouterr().out.strip().isdigit()
    assert main(["alerts", "resolve", "echo", "nothing-open"]) == 0
    assert "echo: alert nothing-open was not open" in capsys.readouterr().err


def test_unknown_plugins_are_not_found(served: Served, capsys: Any) -> None:
    assert main(["plugin", "permissions", "nothing"]) == ExitCode.NOT_FOUND
    assert main(["plugin", "config", "nothing"]) == ExitCode.NOT_FOUND
    assert capsys.readouterr().err.count("no plugin 'nothing'") == 2


def test_plugin_text_is_escaped_on_a_terminal(served: Served, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    served.services.alerts.raise_alert("ops", "clip", "warning", "\x1b]52;c;cm0gLXJmIH4=\x07 copied")
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert main(["alerts"]) == 0
    out = capsys.readouterr().out
    assert "\x1b]" not in out and "\x07" not in out  # the table's own styling (rich, bold header) is all that is left
    assert "\\x1b]52;c;cm0gLXJmIH4=\\x07 copied" in out


def test_a_negative_config_value_after_the_double_dash(served: Served, capsys: Any) -> None:
    assert main(["plugin", "config", "ops", "set", "threshold", "--", "-5"]) == 0
    assert served.services.config.values("ops") == {"threshold": -5}
