"""`plugin status`'s service line (core/service_status.py) against a real plugin server on a Unix socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sysops.core.service_status import service_state, stop_reason
from sysops.store import InstanceRecord
from sysops_sdk import Plugin, ServicePlugin
from sysops_sdk._server import PluginRuntime, PluginServer

LOG = [
    "sysops-plugin: ticker 1.0.0 serving on unix:///run/sysops/plugin.sock",
    "Traceback (most recent call last):",
    "RuntimeError: tick failed",
    "sysops-plugin: service loop stopped: run() raised RuntimeError: tick failed; restart never: the instance keeps",
]


class Ticker(ServicePlugin):
    name = "ticker"

    def initialize(self) -> None:
        return None

    def cleanup(self) -> None:
        return None

    def run(self) -> None:
        self.stopping.wait(30)


class Plain(Plugin):
    name = "plain"

    def initialize(self) -> None:
        return None

    def cleanup(self) -> None:
        return None


def _served(tmp_path: Path, plugin: Plugin) -> Iterator[tuple[PluginServer, InstanceRecord]]:
    endpoint = f"unix://{tmp_path}/plugin.sock"
    server = PluginServer(PluginRuntime(plugin), endpoint)
    server.start()
    record = InstanceRecord("i1", plugin.name, 1, "1.0.0", "h", "img", "sha", endpoint, str(tmp_path), 0.0, True)
    try:
        yield server, record
    finally:
        server.shutdown(0.5)


@pytest.fixture
def ticker(tmp_path: Path) -> Iterator[tuple[PluginServer, InstanceRecord]]:
    yield from _served(tmp_path, Ticker())


def test_the_reason_is_the_last_stop_line() -> None:
    assert stop_reason(LOG) == "run() raised RuntimeError: tick failed"
    assert stop_reason(LOG[:3]) == ""


def test_running_then_stopped_with_the_reason_from_the_log(ticker: tuple[PluginServer, InstanceRecord]) -> None:
    server, record = ticker
    server.start_service()
    assert service_state(record, True, lambda: []) == "running"
    assert server.service is not None
    server.service.policy = "never"  # the instance stays
    server.service._ended("run() raised RuntimeError: tick failed", failed=True)  # what the loop's end does
    assert service_state(record, True, lambda: LOG) == "stopped (run() raised RuntimeError: tick failed)"
    assert service_state(record, False, lambda: LOG) == "stopped (the instance is not serving)"


def test_a_plugin_without_a_loop_is_named(tmp_path: Path) -> None:
    for _, record in _served(tmp_path, Plain()):
        assert service_state(record, True, lambda: []).startswith("unknown (the plugin reports no service loop")
