"""The plugin types' examples (examples/service, integration, event, configuration) in-process, over the
SDK's FakeHost: the heartbeat loop beats until `stopping`, status-api sends its secret as a bearer token to an
HTTP server, deploy-watcher records an event once and has no commands, backup-settings returns its section."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sysops.core.manifest import load_manifest
from sysops_sdk import ConfigurationPlugin, EventPlugin, IntegrationPlugin, ServicePlugin
from sysops_sdk._server import load_plugin_class
from sysops_sdk.testing import FakeHost, PluginHarness

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _example(directory: str) -> type[Any]:
    manifest = load_manifest(EXAMPLES / directory)
    sys.path.insert(0, str(EXAMPLES / directory))
    try:
        return load_plugin_class(manifest.entrypoint)
    finally:
        sys.path.remove(str(EXAMPLES / directory))


def test_each_example_subclasses_its_type_and_its_manifest_names_it() -> None:
    for directory, base, kind in (
        ("service", ServicePlugin, "service"),
        ("integration", IntegrationPlugin, "integration"),
        ("event", EventPlugin, "event"),
        ("configuration", ConfigurationPlugin, "configuration"),
    ):
        assert issubclass(_example(directory), base)
        assert kind in load_manifest(EXAMPLES / directory).types


def test_the_heartbeat_loop_beats_until_stopping() -> None:
    host = FakeHost(config={"interval_seconds": 0.01})
    harness = PluginHarness(_example("service"), services=host.services())
    plugin = harness.plugin
    loop = threading.Thread(target=plugin.run)  # type: ignore[attr-defined]
    loop.start()
    try:
        threading.Event().wait(0.2)
    finally:
        plugin.stopping.set()  # type: ignore[attr-defined]
        loop.join(5)
    assert not loop.is_alive()
    assert host.state["last-beat"][0]["beats"] >= 2
    assert harness.invoke("heartbeat").data["beats"] == host.state["last-beat"][0]["beats"]


@pytest.fixture
def api() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(str(self.headers.get("Authorization")))
            body = json.dumps({"path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_status_api_sends_its_secret_as_a_bearer_token(api: tuple[str, list[str]]) -> None:
    url, seen = api
    host = FakeHost(config={"base_url": url}, secrets={"api-token": "t0ken"})
    harness = PluginHarness(_example("integration"), services=host.services())
    result = harness.invoke("api-status")
    assert result.data == {"url": f"{url}/status", "status": 200, "answer": {"path": "/status"}}
    assert seen == ["Bearer t0ken"]
    failed = harness.invoke("api-status", base_url="http://127.0.0.1:9")
    assert failed.exit_code == 1 and failed.error.startswith("cannot reach http://127.0.0.1:9/status")


def test_deploy_watcher_has_no_commands_and_counts_an_event_once() -> None:
    host = FakeHost()
    harness = PluginHarness(_example("event"), services=host.services())
    assert harness.command_names() == []
    harness.deliver("deploy.finished", {"service": "web"})
    harness.deliver("deploy.finished", {"service": "api"})
    assert host.state["count-deploy.finished"][0] == 2
    assert [call.arguments["message"] for call in host.logs] == ["deploy.finished from operator"] * 2


def test_backup_settings_returns_its_section() -> None:
    host = FakeHost(section={"retention_days": 7, "schedule": "daily", "targets": []})
    harness = PluginHarness(_example("configuration"), services=host.services())
    assert harness.invoke("backup-settings").data == {"retention_days": 7, "schedule": "daily", "targets": []}
