"""`sysops plugin new` on the real engine (issue 14 item 1): each type's scaffold passes its own tests (pytest
with the SDK's kit, in-process, in a subprocess as an author runs it), comes up with `plugin up`, answers
(a command, or for the event type an event it counts), and `plugin down --purge` leaves nothing of it.

The operator's side is what each scaffold's README says: the policy grants what the integration, configuration
and event scaffolds ask, and gives the integration its token and API address (an HTTP server of this test on
the docker bridge's gateway, put on the manifest's allow-list in place of the scaffold's placeholder address).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.integration.conftest import Sysops, bridge_gateway, installation_containers, wait_for

pytestmark = pytest.mark.integration

TOKEN = "scaffold-token-7c1e"
#: The scaffold's placeholder allow-list entry (TEST-NET-1), replaced by the test's API server.
PLACEHOLDER = "  - host: 192.0.2.10\n    ports: [443]\n"


class ApiServer:
    """An HTTP server on the docker bridge's gateway answering every GET with whether the token was right."""

    def __init__(self, host: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"token_ok": self.headers.get("Authorization") == f"Bearer {TOKEN}"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.host = host
        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def api(engine: docker.DockerClient) -> Iterator[ApiServer]:
    server = ApiServer(bridge_gateway(engine))
    yield server
    server.close()


@pytest.fixture(scope="module")
def installation(sysops: Sysops, api: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Sysops:
    token = tmp_path_factory.mktemp("secrets") / "token"
    token.write_text(TOKEN + "\n")
    policy = {
        "plugins": {
            "scaf-integration": {
                "grants": ["config.read"],
                "config": {"base_url": f"http://{api.host}:{api.port}"},
                "secrets": {"api-token": {"file": str(token)}},
            },
            "scaf-configuration": {"grants": ["config.read"]},
            "scaf-event": {"grants": ["events.subscribe", "metrics.write"]},
        }
    }
    sysops.home.mkdir(parents=True, exist_ok=True)
    (sysops.home / "policy.yaml").write_text(json.dumps(policy))  # JSON is YAML
    (sysops.home / "config.yaml").write_text("scaf_configuration:\n  level: high\n")
    return sysops


def run_own_tests(directory: Path) -> str:
    """Run the scaffold's tests as its author would: `python -m pytest` in its directory, the kit in-process."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SYSOPS_", "PYTEST_", "COV_"))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, f"the scaffold's tests failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def metric_line(sysops: Sysops, plugin: str, metric: str) -> str:
    lines = sysops.ok("metrics", "--plugin", plugin).splitlines()
    return next((line for line in lines if line.startswith(metric)), "")


def answer_once(sysops: Sysops, plugin: str, plugin_type: str, api: ApiServer) -> None:
    """Call the scaffold's command (publish an event for the event type) and check its answer."""
    if plugin_type == "command":
        assert sysops.ok(plugin, "greet", "World", "--shout") == "HELLO, WORLD!\n"
    elif plugin_type == "service":
        wait_for(
            lambda: json.loads(sysops.ok(plugin, "status", "--output", "json"))["rounds"] >= 1,
            30,
            "the service loop's first round",
        )
        status = json.loads(sysops.ok("plugin", "status", plugin, "--output", "json"))
        assert status["service"] == "running"
    elif plugin_type == "integration":
        answer = json.loads(sysops.ok(plugin, "check", "--output", "json"))
        url = f"http://{api.host}:{api.port}/status"
        assert answer == {"url": url, "status": 200, "answer": {"token_ok": True}}
    elif plugin_type == "configuration":
        assert json.loads(sysops.ok(plugin, "settings", "--output", "json")) == {"enabled": True, "level": "high"}
    else:
        sysops.ok("events", "publish", f"{plugin}.started", '{"by": "test"}')
        metric = "sysops_plugin_scaf_event_events_total"
        wait_for(lambda: metric_line(sysops, plugin, metric).endswith(" 1.0"), 30, f"{metric} 1.0")


@pytest.mark.parametrize("plugin_type", ["command", "service", "integration", "configuration", "event"])
def test_a_scaffold_passes_its_tests_comes_up_answers_and_goes(
    installation: Sysops, engine: docker.DockerClient, api: ApiServer, tmp_path: Path, plugin_type: str
) -> None:
    sysops = installation
    name = f"scaf-{plugin_type}"
    directory = tmp_path / name
    made = sysops.run("plugin", "new", name, "--type", plugin_type, "--dir", str(directory))
    assert made.returncode == 0, made.stderr

    assert " passed" in run_own_tests(directory)

    if plugin_type == "integration":
        manifest = (directory / "plugin.yaml").read_text()
        assert PLACEHOLDER in manifest
        allowed = f"  - host: {api.host}\n    ports: [{api.port}]\n"
        (directory / "plugin.yaml").write_text(manifest.replace(PLACEHOLDER, allowed))
    sysops.ok("plugin", "up", str(directory))
    answer_once(sysops, name, plugin_type, api)

    sysops.ok("plugin", "down", name, "--purge")
    leftovers = [
        container.name
        for container in installation_containers(engine, sysops.installation_id)
        if container.labels.get("sysops.plugin") == name
    ]
    assert leftovers == []
    labels = [f"sysops.plugin={name}", f"sysops.installation={sysops.installation_id}"]
    assert engine.images.list(filters={"label": labels}) == []
    assert name not in sysops.ok("plugin", "ls")
