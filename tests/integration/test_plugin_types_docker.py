"""The plugin types on the real engine (issue 11 part C):
- a service plugin whose loop crashes exits, is started again by the runtime (the engine's restart policy)
  and `plugin status` says why; with `service.restart: never` the instance stays, its commands answer and
  status shows the service stopped with the reason;
- an event plugin (examples/event) has no commands and receives an event `sysops events publish` sends;
- an integration plugin (examples/integration) reads its token from the file the policy names and reaches
  the HTTP server on its egress allow-list (started by the test on the docker bridge's gateway), not an
  unlisted one; a secret its manifest does not list is refused even when the policy names it;
- the service example beats in its loop, the configuration example reads its section of the config file.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.integration.conftest import Sysops, bridge_gateway, copy_example, wait_for, write_plugin

pytestmark = pytest.mark.integration

TOKEN = "tok-3f9c2a"

SERVICE_CODE = """
import threading

from sysops_sdk import ServicePlugin, plugin_command


class P(ServicePlugin):
    name = "{name}"
    version = "1.0.0"

    def initialize(self) -> None:
        self.broken = threading.Event()

    def cleanup(self) -> None:
        pass

    def run(self) -> None:
        while not self.stopping.is_set():
            if self.broken.wait(0.2):
                raise RuntimeError("asked to break")

    @plugin_command("{name}-break")
    def break_loop(self) -> str:
        self.broken.set()
        return "breaking"

    @plugin_command("{name}-ping")
    def ping(self) -> str:
        return "pong"
"""

PEEKER_CODE = """
from sysops_sdk import IntegrationPlugin, argument, plugin_command


class P(IntegrationPlugin):
    name = "peeker"
    version = "1.0.0"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("peek")
    @argument("secret_name", help="Which secret")
    def peek(self, secret_name: str) -> str:
        return f"{secret_name} has {len(self.secret(secret_name))} characters"
"""


@dataclass
class ApiServer:
    """An HTTP server on the docker bridge's gateway answering GET /status, checking the bearer token."""

    host: str
    requests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                body = json.dumps({"token_ok": self.headers.get("Authorization") == f"Bearer {TOKEN}"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def gateway(engine: docker.DockerClient) -> str:
    """The docker bridge's address on the host: containers reach the host there."""
    return bridge_gateway(engine)


@pytest.fixture(scope="module")
def servers(gateway: str) -> Iterator[tuple[ApiServer, ApiServer]]:
    allowed, unlisted = ApiServer(gateway), ApiServer(gateway)
    yield allowed, unlisted
    allowed.close()
    unlisted.close()


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("secrets")
    (directory / "api-token").write_text(TOKEN + "\n")
    (directory / "other").write_text("not-for-peeker")
    return directory


@pytest.fixture(scope="module")
def installation(sysops: Sysops, servers: tuple[ApiServer, ApiServer], secrets_dir: Path) -> Sysops:
    """The module's installation with a policy for the test plugins (the secrets by reference)."""
    allowed, _ = servers
    policy = {
        "plugins": {
            "deploy-watcher": {"grants": ["events.subscribe", "logs.write", "state.*"]},
            "heartbeat": {"grants": ["state.*", "config.read"], "config": {"interval_seconds": 0.5}},
            "backup-settings": {"grants": ["config.read"]},
            "status-api": {
                "grants": ["config.read"],
                "config": {"base_url": allowed.url},
                "secrets": {"api-token": {"file": str(secrets_dir / "api-token")}},
            },
            "peeker": {
                "secrets": {
                    "listed": {"file": str(secrets_dir / "api-token")},
                    "unlisted": {"file": str(secrets_dir / "other")},
                }
            },
        }
    }
    sysops.home.mkdir(parents=True, exist_ok=True)
    (sysops.home / "policy.yaml").write_text(json.dumps(policy))  # JSON is YAML
    return sysops


def status(sysops: Sysops, name: str) -> dict[str, Any]:
    return dict(json.loads(sysops.ok("plugin", "status", name, "--output", "json")))


def service_plugin(directory: Path, name: str, restart: str) -> Path:
    extra = f"types: [service, command]\nservice: {{restart: {restart}}}\nnetwork: none\n"
    return write_plugin(directory / name, name=name, code=SERVICE_CODE.format(name=name), manifest_extra=extra)


def test_a_crashed_service_loop_is_restarted_by_the_runtime_and_status_says_why(
    installation: Sysops, tmp_path: Path
) -> None:
    sysops = installation
    sysops.ok("plugin", "up", str(service_plugin(tmp_path, "crasher", "on-failure")))
    before = status(sysops, "crasher")
    assert before["service"] == "running"
    assert sysops.ok("crasher-break") == "breaking\n"

    def restarted() -> bool:
        now = status(sysops, "crasher")
        return now["service"] == "running" and "service loop stopped" in now["last_error"]

    wait_for(restarted, 60, "the runtime to start the crashed instance again")
    after = status(sysops, "crasher")
    assert after["last_error"].startswith(
        "crashed, restarted 1 time: service loop stopped: run() raised RuntimeError: "
    )
    assert "asked to break; restart on-failure: exiting so the runtime restarts the instance" in after["last_error"]
    assert "restarted 1 time" in after["fault"]
    assert after["container_id"] == before["container_id"]  # the same instance, started again by the engine
    wait_for(lambda: sysops.run("crasher-ping").stdout == "pong\n", 30, "the restarted instance to answer")
    sysops.ok("plugin", "down", "crasher")


def test_restart_never_keeps_the_instance_serving_with_the_service_stopped(
    installation: Sysops, tmp_path: Path
) -> None:
    sysops = installation
    sysops.ok("plugin", "up", str(service_plugin(tmp_path, "stayer", "never")))
    assert status(sysops, "stayer")["service"] == "running"
    sysops.ok("stayer-break")
    wait_for(lambda: status(sysops, "stayer")["service"] != "running", 30, "the service loop to stop")
    after = status(sysops, "stayer")
    assert after["service"] == "stopped (run() raised RuntimeError: asked to break)"
    assert after["health"] == "SERVING" and after["state"] == "Active"
    assert after["fault"] == "" and after["last_error"] == ""  # never restarted
    assert sysops.ok("stayer-ping") == "pong\n"
    text = sysops.ok("plugin", "status", "stayer")
    assert "service       stopped (run() raised RuntimeError: asked to break)" in text
    sysops.ok("plugin", "down", "stayer")


def test_an_event_plugin_has_no_commands_and_receives_a_published_event(installation: Sysops, tmp_path: Path) -> None:
    sysops = installation
    sysops.ok("plugin", "up", str(copy_example("event", tmp_path)))
    watcher = status(sysops, "deploy-watcher")
    assert watcher["commands"] == [] and watcher["service"] == ""
    sysops.ok("events", "publish", "deploy.finished", '{"service": "web"}')

    def logged() -> bool:
        out = sysops.run("plugin", "logs", "deploy-watcher", "--structured", "--output", "json").stdout
        return "deploy.finished from operator" in out

    wait_for(logged, 60, "deploy-watcher to record the event")
    sysops.ok("plugin", "down", "deploy-watcher")


def test_an_integration_plugin_reads_its_secret_and_reaches_only_its_allow_list(
    installation: Sysops, tmp_path: Path, servers: tuple[ApiServer, ApiServer], gateway: str
) -> None:
    sysops = installation
    allowed, unlisted = servers
    directory = copy_example("integration", tmp_path)
    manifest = (directory / "plugin.yaml").read_text()
    rule = "  - host: status.example.com\n    ports: [443]\n"
    assert rule in manifest
    (directory / "plugin.yaml").write_text(
        manifest.replace(rule, f"  - host: {gateway}\n    ports: [{allowed.port}]\n")
    )
    sysops.ok("plugin", "up", str(directory))

    answer = json.loads(sysops.ok("api-status", "--output", "json"))
    assert answer == {"url": f"{allowed.url}/status", "status": 200, "answer": {"token_ok": True}}
    assert allowed.requests == ["/status"]

    refused = sysops.run("api-status", "--base-url", unlisted.url)
    assert refused.returncode == 1
    assert f"cannot reach {unlisted.url}/status" in refused.stderr
    assert unlisted.requests == []
    assert TOKEN not in sysops.ok("plugin", "logs", "status-api") + refused.stderr
    sysops.ok("plugin", "down", "status-api")


def test_a_secret_the_manifest_does_not_list_is_refused(installation: Sysops, tmp_path: Path) -> None:
    sysops = installation
    extra = "types: [integration, command]\nsecrets: [listed]\nnetwork: none\n"
    sysops.ok(
        "plugin", "up", str(write_plugin(tmp_path / "peeker", name="peeker", code=PEEKER_CODE, manifest_extra=extra))
    )
    assert sysops.ok("peek", "listed") == f"listed has {len(TOKEN)} characters\n"
    refused = sysops.run("peek", "unlisted")
    assert refused.returncode == 9, refused.stderr
    assert "plugin 'peeker' asked for secret 'unlisted', which its manifest does not list" in refused.stderr
    sysops.ok("plugin", "down", "peeker")


def test_the_service_example_beats_in_its_loop(installation: Sysops, tmp_path: Path) -> None:
    sysops = installation
    sysops.ok("plugin", "up", str(copy_example("service", tmp_path)))
    assert status(sysops, "heartbeat")["service"] == "running"
    wait_for(lambda: json.loads(sysops.ok("heartbeat", "--output", "json"))["beats"] >= 3, 30, "three beats")
    sysops.ok("plugin", "down", "heartbeat")


def test_the_configuration_example_reads_its_section(installation: Sysops, tmp_path: Path) -> None:
    sysops = installation
    (sysops.home / "config.yaml").write_text("backup:\n  retention_days: 30\n")
    try:
        sysops.ok("plugin", "up", str(copy_example("configuration", tmp_path)))
        section = json.loads(sysops.ok("backup-settings", "--output", "json"))
        assert section == {"retention_days": 30, "schedule": "daily", "targets": []}
        sysops.ok("plugin", "down", "backup-settings")
    finally:
        (sysops.home / "config.yaml").unlink()


def test_a_class_whose_type_the_manifest_does_not_list_is_refused_at_readiness(
    installation: Sysops, tmp_path: Path
) -> None:
    sysops = installation
    directory = write_plugin(
        tmp_path / "undeclared",
        name="undeclared",
        code=SERVICE_CODE.format(name="undeclared"),
        manifest_extra="types: [command]\nnetwork: none\n",
    )
    result = sysops.run("plugin", "up", str(directory))
    assert result.returncode == 6, result.stderr
    assert "is a ServicePlugin, but plugin.yaml's types lists command: add 'service' to types" in result.stderr
    assert "Traceback" not in result.stderr
