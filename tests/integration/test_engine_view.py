"""The Docker driver's engine view on the real engine: a quiet installation's reconcile passes ask the engine
nothing, a change made outside sysops is seen at once (its event drops what was held), and at `stop` the view
lets go and the driver asks the engine again."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import docker
import pytest
from sysops.runtime.base import LABEL_INSTALLATION, LABEL_INSTANCE, LABEL_PLUGIN
from sysops.runtime.docker.driver import DockerDriver
from sysops.runtime.docker.engine_view import EngineView

from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration
BASE_IMAGE = "sysops/plugin-base:0.1.0"
_COUNTED = ("containers", "inspect_container", "inspect_volume")


@pytest.fixture
def installation(engine: docker.DockerClient) -> Iterator[str]:
    """A private installation id; its containers are removed at the end."""
    installation = f"viewtest{uuid.uuid4().hex[:12]}"
    yield installation
    for container in engine.containers.list(all=True, filters={"label": f"{LABEL_INSTALLATION}={installation}"}):
        container.remove(force=True)


def _run(engine: docker.DockerClient, installation: str, plugin: str) -> str:
    labels = {LABEL_INSTALLATION: installation, LABEL_PLUGIN: plugin, LABEL_INSTANCE: uuid.uuid4().hex[:12]}
    container = engine.containers.run(
        BASE_IMAGE, entrypoint=["sleep", "300"], labels=labels, detach=True, network_mode="none", user="65534:65534"
    )
    return str(container.id)


def _count_calls(driver: DockerDriver) -> dict[str, int]:
    """Count the engine calls the driver's client makes from now on (listing, inspects)."""
    counts = dict.fromkeys(_COUNTED, 0)
    api = driver.client.api
    for name in _COUNTED:
        original: Callable[..., Any] = getattr(api, name)

        def counted(*args: Any, _name: str = name, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            counts[_name] += 1
            return _original(*args, **kwargs)

        setattr(api, name, counted)
    return counts


def _pass(driver: DockerDriver, installation: str, plugins: list[str]) -> dict[str, bool]:
    """What a reconcile pass asks the driver: the installation's instances, then each plugin's maintain."""
    listed = driver.list_instances({LABEL_INSTALLATION: installation})
    for plugin in plugins:
        driver.maintain({LABEL_INSTALLATION: installation, LABEL_PLUGIN: plugin})
    return {status.handle: status.running for status in listed}


def test_quiet_passes_ask_the_engine_nothing_and_outside_changes_are_seen(
    engine: docker.DockerClient, installation: str
) -> None:
    plugins = ["alpha", "beta", "gamma"]
    ids = [_run(engine, installation, plugin) for plugin in plugins]
    driver, stop = DockerDriver(), threading.Event()
    driver.follow_engine_events(installation, stop)
    try:
        wait_for(lambda: driver._view is not None and driver._view.live, 10, "the event subscription")
        assert _pass(driver, installation, plugins) == dict.fromkeys(ids, True)
        counts = _count_calls(driver)
        for _ in range(5):
            assert _pass(driver, installation, plugins) == dict.fromkeys(ids, True)
        assert counts == dict.fromkeys(_COUNTED, 0), "a quiet installation's passes went to the engine"

        engine.api.kill(ids[0])  # outside sysops: only the engine's event tells of it
        wait_for(lambda: not _pass(driver, installation, plugins)[ids[0]], 5, "the killed container seen stopped")
        added = _run(engine, installation, "delta")
        wait_for(lambda: added in _pass(driver, installation, plugins), 5, "a new container seen")
        assert counts["inspect_container"] >= 2  # what changed, and only that, was asked again
        assert counts["inspect_container"] <= 4
    finally:
        stop.set()
    thread_gone = lambda: not any(t.name == "sysops-engine-events" and t.is_alive() for t in threading.enumerate())  # noqa: E731
    wait_for(thread_gone, 5, "the event thread to end at stop")
    assert driver._view is not None and not driver._view.live
    before = counts["containers"]
    _pass(driver, installation, plugins)
    assert counts["containers"] > before, "after stop the driver must ask the engine itself"


class _SilentStream:
    """An event stream that delivers nothing until closed: only the driver's own changes can drop what is held."""

    def __init__(self) -> None:
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        self._closed.wait()
        return iter(())

    def close(self) -> None:
        self._closed.set()


def test_the_drivers_own_changes_are_seen_without_waiting_for_their_events(
    engine: docker.DockerClient, installation: str
) -> None:
    container = _run(engine, installation, "alpha")
    driver, stop = DockerDriver(), threading.Event()
    driver._view = EngineView(lambda filters: _SilentStream(), installation)
    threading.Thread(target=driver._view.run, args=(stop,), daemon=True).start()
    try:
        wait_for(lambda: driver._view is not None and driver._view.live, 10, "the (silent) subscription")
        assert _pass(driver, installation, ["alpha"]) == {container: True}
        driver.stop(container, 1.0)
        assert _pass(driver, installation, ["alpha"]) == {container: False}
        driver.remove(container)
        assert _pass(driver, installation, ["alpha"]) == {}
    finally:
        stop.set()
