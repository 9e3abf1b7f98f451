"""The status-api plugin's tests, with the sysops test kit: a local HTTP server stands in for the external API.

The server listens on the loopback interface of wherever the tests run, so they pass in-process and inside
the plugin's container (`sysops plugin test examples/integration`, no network but loopback).
"""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from sysops_sdk.testing import PluginUnderTest


class StatusApi(BaseHTTPRequestHandler):
    tokens: list[str] = []

    def do_GET(self) -> None:
        StatusApi.tokens.append(self.headers.get("Authorization", ""))
        body = json.dumps({"ok": True, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api_url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), StatusApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    StatusApi.tokens.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def status_api(plugin: PluginUnderTest) -> PluginUnderTest:
    if plugin.mode != "inprocess":
        pytest.skip("the token secret comes from the operator's policy on a real host")
    plugin.host.secrets["api-token"] = "s3cret"
    return plugin


def test_status_asks_the_api_with_the_token(status_api: PluginUnderTest, api_url: str) -> None:
    result = status_api.invoke("api-status", base_url=api_url)
    assert result.exit_code == 0
    assert result.data == {"url": f"{api_url}/status", "status": 200, "answer": {"ok": True, "path": "/status"}}
    assert StatusApi.tokens == ["Bearer s3cret"]


def test_an_unreachable_api_fails_with_a_message(status_api: PluginUnderTest) -> None:
    result = status_api.invoke("api-status", base_url="http://127.0.0.1:9")
    assert result.exit_code == 1
    assert "cannot reach http://127.0.0.1:9/status" in result.error


def test_without_its_secret_the_call_is_refused(plugin: PluginUnderTest) -> None:
    if plugin.mode != "inprocess":
        pytest.skip("the policy decides on a real host")
    result = plugin.invoke("api-status", base_url="http://127.0.0.1:9")
    assert result.exit_code == 9
