"""Fixtures for engine-free unit tests: an isolated state directory and in-process plugins."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sysops.core.orchestrator import Orchestrator
from sysops.host import launcher
from sysops.host.call_server import CallServer, start_call_server
from sysops.host.launcher import HOST_PROTOCOL, HostRecord
from sysops.host.paths import host_paths
from sysops.private_paths import write_private_file
from sysops.runtime.base import RuntimeDriver
from sysops.runtime.fake import FakeDriver
from sysops.server.service import serve
from sysops.settings import Settings
from sysops_sdk import Plugin, argument, option, plugin_command


@pytest.fixture(autouse=True)
def no_real_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests never start a resident host process: one that needs a host uses `control_host`/`call_host`."""

    def refuse(paths: object) -> None:
        raise AssertionError("a unit test tried to start a resident host; use the control_host fixture")

    monkeypatch.setattr(launcher, "_start", refuse)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("SYSOPS_HOME", str(path))
    return path


@pytest.fixture
def settings(home: Path) -> Settings:
    return Settings(home=home, ready_timeout=5.0, drain_timeout=2.0)


class EchoV1(Plugin):
    name = "echo"
    version = "1.0.0"
    description = "echo test plugin"

    def initialize(self) -> None:
        self.calls = 0

    def cleanup(self) -> None:
        pass

    def snapshot(self) -> dict[str, int]:
        return {"calls": self.calls}

    def restore(self, state: dict[str, int]) -> None:
        self.calls = state["calls"]

    @plugin_command("echo")
    @argument("text", help="What to echo")
    @option("--upper", is_flag=True, help="In capitals")
    def echo(self, text: str, upper: bool = False) -> str:
        self.calls += 1
        return f"v1:{text.upper() if upper else text}"

    @plugin_command("calls")
    def count_calls(self) -> dict[str, int]:
        return {"calls": self.calls}


class EchoV2(EchoV1):
    version = "2.0.0"

    @plugin_command("echo")
    @argument("text", help="What to echo")
    @option("--upper", is_flag=True, help="In capitals")
    def echo(self, text: str, upper: bool = False) -> str:
        self.calls += 1
        return f"v2:{text}"


class BrokenInit(EchoV1):
    version = "3.0.0"

    def initialize(self) -> None:
        raise RuntimeError("database unreachable")


class ClashingPlugin(EchoV1):
    name = "other"


@pytest.fixture
def plugin_classes() -> Iterator[dict[str, type[Plugin]]]:
    yield {"echo-v1": EchoV1, "echo-v2": EchoV2, "broken": BrokenInit, "clash": ClashingPlugin}


@pytest.fixture
def orchestrator(settings: Settings, plugin_classes: dict[str, type[Plugin]]) -> Iterator[Orchestrator]:
    """An orchestrator over the fake driver, with the images of `plugin_classes`; its instances removed after."""
    driver = FakeDriver()
    for image, plugin_class in plugin_classes.items():
        driver.add_image(image, plugin_class)
    orchestrator = Orchestrator(settings, driver)
    yield orchestrator
    for handle in list(driver.instances):
        driver.remove(handle)
    orchestrator.close()


@pytest.fixture
def call_host(settings: Settings) -> Iterator[CallServer]:
    """The resident host's call socket served in this process, so routed `main([...])` calls never start a host."""
    server = start_call_server(settings, host_paths(settings).call_socket)
    yield server
    server.stop()


@contextmanager
def in_process_host(settings: Settings, driver: RuntimeDriver) -> Iterator[None]:
    """The resident host's control API and call socket served in this process over `driver`, recorded in
    host.json as a running host, so `main(["plugin", ...])` talks to it as to a real one (its real Unix sockets)."""
    paths = host_paths(settings)
    server = serve(None, "docker", "", settings, unix_socket=paths.control_socket, driver=driver)
    assert server.servicer is not None
    calls = start_call_server(settings, paths.call_socket, lister=server.servicer.plugin_list_json)
    record = HostRecord(os.getpid(), HOST_PROTOCOL, time.time(), "fake")
    write_private_file(paths.record, json.dumps(record.as_dict()))
    try:
        yield
    finally:
        calls.stop()
        server.stop(0).wait(5)
        paths.record.unlink(missing_ok=True)


@pytest.fixture
def control_host(settings: Settings, orchestrator: Orchestrator) -> Iterator[Orchestrator]:
    """`in_process_host` over the `orchestrator` fixture's fake driver."""
    with in_process_host(settings, orchestrator.driver):
        yield orchestrator
