"""The host reconciles on the engine's events, not on a poll (issue 15 item 3: an idle host under 2 % CPU).

On the real engine: the event stream (runtime/docker/engine_events.py) names the plugin of an instance
container that starts, dies or is removed, never a container without the instance label (a build's step),
and ends at once when closed. The resident host, with its safety pass set to 600 s (SYSOPS_RECONCILE_SECONDS)
so that only events can make it act in time, notices a container removed outside sysops within seconds, and
starts again an instance stopped cleanly outside sysops once recovery's grace is over (the follow-up pass).
Each test uses its own installation and removes what it made.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from sysops.runtime.docker.driver import DockerDriver
from sysops.runtime.docker.engine_events import RESYNC

from tests.integration.conftest import Sysops, copy_example, installation_containers, wait_for

pytestmark = pytest.mark.integration
BASE_IMAGE = os.environ.get("SYSOPS_BASE_IMAGE", "sysops/plugin-base:0.1.0")
#: Longer than any test here: only an event can make the host act in time.
SAFETY_SECONDS = "600"


@contextlib.contextmanager
def followed(labels: dict[str, str]) -> Iterator[list[str | None]]:
    """The plugin names the stream yields while the block runs (in a thread); the stream is closed after."""
    seen: list[str | None] = []
    events = DockerDriver().instance_events(labels)
    reader = threading.Thread(target=lambda: seen.extend(events), daemon=True)
    reader.start()
    try:
        wait_for(lambda: RESYNC in seen, 10, "the event stream to connect")
        yield seen
    finally:
        started = time.monotonic()
        events.close()
        reader.join(5)
        assert not reader.is_alive() and time.monotonic() - started < 2, "close did not end the stream at once"


def test_the_stream_names_the_plugin_of_each_instance_change_and_nothing_else(engine: docker.DockerClient) -> None:
    installation = f"evt{uuid.uuid4().hex[:9]}"
    labels = {"sysops.installation": installation, "sysops.plugin": "watched"}
    made: list[str] = []

    def run(extra: dict[str, str]) -> docker.models.containers.Container:
        container = engine.containers.run(
            BASE_IMAGE, entrypoint=["python", "-c", "pass"], labels={**labels, **extra}, detach=True
        )
        made.append(str(container.id))
        return container

    try:
        with followed({"sysops.installation": installation}) as seen:
            run({"sysops.plugin": "a-build-step"})  # no instance label: like a build's step container
            instance = run({"sysops.instance": "abc123"})
            instance.wait(timeout=30)
            instance.remove()
            wait_for(lambda: seen.count("watched") >= 3, 10, "start, die and destroy of the instance")
            time.sleep(0.5)
        assert seen[0] is RESYNC
        assert set(seen[1:]) == {"watched"}, seen
    finally:
        for handle in made:
            with contextlib.suppress(docker.errors.NotFound):
                engine.api.remove_container(handle, force=True)


def _event_kinds(sysops: Sysops, plugin: str) -> list[tuple[str, str]]:
    """The plugin's stored events, read without reconciling (a `plugin ls` would reconcile first)."""
    lines = sysops.ok("events", "--plugin", plugin, "--output", "json", timeout=30).splitlines()
    return [(event["kind"], event["message"]) for event in map(json.loads, lines)]


@pytest.fixture
def evented(fresh_sysops: Sysops, tmp_path: Path) -> Sysops:
    """A fresh installation whose host runs its safety pass only every 600 s, with hello up."""
    fresh_sysops.env["SYSOPS_RECONCILE_SECONDS"] = SAFETY_SECONDS
    fresh_sysops.ok("plugin", "up", str(copy_example("hello", tmp_path)))
    return fresh_sysops


def _hello(engine: docker.DockerClient, sysops: Sysops) -> docker.models.containers.Container:
    (container,) = [
        c
        for c in installation_containers(engine, sysops.installation_id)
        if c.labels.get("sysops.plugin") == "hello" and "sysops.role" not in c.labels
    ]
    return container


def test_a_container_removed_outside_sysops_is_noticed_within_seconds(
    engine: docker.DockerClient, evented: Sysops
) -> None:
    _hello(engine, evented).remove(force=True)
    wait_for(
        lambda: any(kind == "failed" and "disappeared" in message for kind, message in _event_kinds(evented, "hello")),
        10,
        "the host to record that hello's container disappeared",
    )


def test_an_instance_stopped_outside_sysops_is_started_again_after_the_grace(
    engine: docker.DockerClient, evented: Sysops
) -> None:
    container = _hello(engine, evented)
    container.stop(timeout=5)  # a clean stop: the engine's restart policy leaves it stopped
    wait_for(
        lambda: any(kind == "restarted" for kind, _ in _event_kinds(evented, "hello")),
        15,
        "the host to start hello's stopped instance again",
    )
    container.reload()
    assert container.status == "running"
