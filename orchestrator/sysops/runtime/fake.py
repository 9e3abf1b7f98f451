"""An in-process runtime driver for unit tests of the core (rollout, router, reconciliation).

"Images" are plugin classes registered by id; "containers" are real sysops_sdk plugin servers running on
threads and serving on the Unix socket in the instance's socket directory, so the core talks real gRPC.
It is never the proof that a container feature works: integration tests use the Docker driver.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from sysops_sdk import Plugin
from sysops_sdk.testing import PluginRuntime, PluginServer
from sysops_sdk.wire import EXIT_INITIALIZE

from sysops.errors import BuildError
from sysops.runtime.base import (
    BuildRequest,
    BuiltImage,
    InstanceSpec,
    InstanceStatus,
    ProgressCallback,
    ResourceLimits,
    ResourceReport,
    StreamCancel,
)


@dataclass
class _FakeInstance:
    status: InstanceStatus
    server: PluginServer | None = None
    logs: list[str] = field(default_factory=list)


class FakeDriver:
    """Runs plugin classes in threads, as if they were containers."""

    name = "fake"
    #: Like Docker: an instance that stopped cleanly stays stopped until the core starts it again.
    restarts_stopped_instances = True
    #: Like Docker: an instance removed outside sysops leaves the plugin Failed.
    replaces_lost_instances = False

    def __init__(self) -> None:
        self.images: dict[str, type[Plugin]] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self.instances: dict[str, _FakeInstance] = {}
        self.started_specs: list[InstanceSpec] = []
        self._ids = itertools.count(1)
        self.fail_builds = False
        self.limit_mismatches: list[str] = []
        #: Handles of instances `restart` restarted, in order.
        self.restarted: list[str] = []

    def add_image(self, image_id: str, plugin_class: type[Plugin]) -> None:
        """Register a plugin class under an image id."""
        self.images[image_id] = plugin_class

    def ping(self) -> None:
        """The fake engine is always reachable."""

    def image_id(self, reference: str) -> str | None:
        """Return the id if the image is registered."""
        return reference if reference in self.images else None

    def image_labels(self, reference: str) -> dict[str, str] | None:
        """Return the labels given with `label_image` ({} by default), or None for an unknown image."""
        return dict(self.labels.get(reference, {})) if reference in self.images else None

    def label_image(self, image_id: str, labels: Mapping[str, str]) -> None:
        """Give a registered image labels (as a base image gives its plugin images theirs)."""
        self.labels[image_id] = dict(labels)

    def build_image(self, request: BuildRequest, progress: ProgressCallback) -> BuiltImage:
        """Pretend to build: the tag must already be registered."""
        if self.fail_builds or request.tag not in self.images:
            raise BuildError(f"building {request.tag} failed: no such fake image")
        return BuiltImage(id=request.tag, tag=request.tag, digest=request.tag)

    def remove_image(self, reference: str) -> None:
        """Forget an image."""
        self.images.pop(reference, None)

    def start(self, spec: InstanceSpec) -> InstanceStatus:
        """Create the plugin and serve it on the spec's socket; a failing initialize() 'exits' with 4."""
        handle = f"fake{next(self._ids):04d}"
        self.started_specs.append(spec)
        status = InstanceStatus(
            handle=handle,
            name=spec.name,
            labels=dict(spec.labels),
            running=True,
            image=spec.image,
            started_at=_engine_time(),
        )
        instance = _FakeInstance(status)
        self.instances[handle] = instance
        plugin = self.images[spec.image]()
        try:
            plugin.initialize()
        except Exception as exc:
            # The SDK's plugin server prints this line and exits with EXIT_INITIALIZE.
            failure = f"{type(exc).__name__}: {exc}"
            instance.logs.append(f"sysops-plugin: initialize() of plugin {plugin.name!r} failed: {failure}")
            instance.status = replace(status, running=False, exit_code=EXIT_INITIALIZE)
            return status
        address = f"unix://{spec.socket_dir}/plugin.sock"
        server = PluginServer(PluginRuntime(plugin), address, spec.token)
        server.start()
        # The line the SDK's plugin server prints when it serves (what `plugin logs` shows of an engine's instance).
        instance.logs.append(f"sysops-plugin: {plugin.name} {plugin.version} serving on {address}")
        instance.server = server
        return status

    def inspect(self, handle: str) -> InstanceStatus | None:
        """Return the fake container's status."""
        instance = self.instances.get(handle)
        if instance is None:
            return None
        if instance.server is not None and instance.server._stopped.is_set():
            instance.status = replace(instance.status, running=False, exit_code=0)
        return instance.status

    def list_instances(self, labels: Mapping[str, str]) -> list[InstanceStatus]:
        """List fake containers carrying all labels."""
        return [
            i.status
            for i in self.instances.values()
            if all(i.status.labels.get(key) == value for key, value in labels.items())
        ]

    def logs(
        self, handle: str, *, tail: int | None = None, follow: bool = False, cancel: StreamCancel | None = None
    ) -> Iterator[str]:
        """Yield recorded log lines (the last `tail`); a follow then waits for more, as an engine's does, until
        the instance stops or is removed or `cancel` is cancelled."""
        instance = self.instances.get(handle)
        if instance is None:
            return iter(())
        first = max(0, len(instance.logs) - tail) if tail is not None else 0
        return self._follow(handle, instance, first, cancel) if follow else iter(instance.logs[first:])

    def _follow(self, handle: str, instance: _FakeInstance, first: int, cancel: StreamCancel | None) -> Iterator[str]:
        shown = first
        while True:
            yield from instance.logs[shown:]
            shown = len(instance.logs)
            gone = self.instances.get(handle) is not instance or not instance.status.running
            if gone or (cancel is not None and cancel.cancelled):
                return
            time.sleep(0.05)

    def resources(self, handle: str, limits: ResourceLimits, *, sample_seconds: float = 0.0) -> ResourceReport:
        """The fake applies exactly what is asked and uses nothing."""
        applied: dict[str, object] = {
            "cpu_percent": limits.nano_cpus / 10_000_000,
            "memory_mb": limits.memory_bytes // (1024 * 1024),
            "pids": limits.pids,
            "disk_io_mb_per_sec": limits.io_bytes_per_sec / (1024 * 1024) if limits.io_bytes_per_sec else None,
            "network_connections": limits.network_connections,
        }
        return ResourceReport(applied=applied, usage={}, mismatches=tuple(self.limit_mismatches))

    def stop(self, handle: str, timeout: float) -> None:
        """Shut the server down."""
        instance = self.instances.get(handle)
        if instance is not None and instance.server is not None:
            threading.Thread(target=instance.server.shutdown, args=(timeout,), daemon=True).start()
            instance.server._stopped.wait(timeout + 1)
        if instance is not None:
            instance.status = replace(instance.status, running=False, exit_code=0, finished_at=_engine_time())

    def restart(self, handle: str, timeout: float) -> None:
        """Stop the instance and serve a fresh plugin object on the same socket with the same token."""
        instance = self.instances[handle]
        spec = next(spec for spec in self.started_specs if spec.name == instance.status.name)
        self.stop(handle, timeout)
        self.restarted.append(handle)
        plugin = self.images[spec.image]()
        plugin.initialize()
        instance.server = PluginServer(PluginRuntime(plugin), f"unix://{spec.socket_dir}/plugin.sock", spec.token)
        instance.server.start()
        instance.status = replace(instance.status, running=True, exit_code=None, started_at=_engine_time())

    def crash(self, handle: str, exit_code: int = 1, oom_killed: bool = False, seconds_ago: float = 0.0) -> None:
        """Simulate a crash of a running instance (or, with exit code 0, 143 or 137, a stop by the engine)
        that happened `seconds_ago`."""
        instance = self.instances[handle]
        if instance.server is not None:
            instance.server.server.stop(0)
        finished = _engine_time(time.time() - seconds_ago)
        instance.status = replace(
            instance.status, running=False, exit_code=exit_code, oom_killed=oom_killed, finished_at=finished
        )

    def remove(self, handle: str) -> None:
        """Stop and forget an instance."""
        if handle in self.instances:
            self.stop(handle, 0.1)
            del self.instances[handle]

    def remove_volume(self, name: str) -> None:
        """Volumes are not modelled."""

    def maintain(self, labels: Mapping[str, str]) -> None:
        """Nothing to supervise: fake instances change only when a test says so."""

    def remove_labelled(self, labels: Mapping[str, str]) -> int:
        """Remove fake instances carrying `labels` (images and volumes are not modelled)."""
        doomed = [s.handle for s in self.list_instances(labels)]
        for handle in doomed:
            self.remove(handle)
        return len(doomed)


def _engine_time(epoch: float | None = None) -> str:
    """An engine timestamp (2024-05-01T10:00:00.123456Z) of `epoch` seconds, now by default."""
    moment = datetime.fromtimestamp(time.time() if epoch is None else epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
