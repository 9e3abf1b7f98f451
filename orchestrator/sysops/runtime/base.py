"""The runtime driver interface: how the core starts, watches and stops plugin instances.

Split as go-plugin's runner is (start, inspect, wait, kill, id) so that a restarted orchestrator can
find what runs by label and re-adopt it. A driver knows containers, not lifecycles: the core decides.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

LABEL_INSTALLATION = "sysops.installation"
LABEL_PLUGIN = "sysops.plugin"
LABEL_VERSION = "sysops.version"
LABEL_REVISION = "sysops.revision"
LABEL_INSTANCE = "sysops.instance"
LABEL_FINGERPRINT = "sysops.fingerprint"
#: The uid (and gid) of the base image's user; containers run as the plugin's own uid instead (`plugin_uid`).
PLUGIN_UID = 10001
#: Plugin uids are taken from [PLUGIN_UID_BASE, PLUGIN_UID_BASE + PLUGIN_UID_SPAN): far above login and
#: system users (and the 10001 of images), so a plugin never shares its uid with a local user.
PLUGIN_UID_BASE = 0x10000000
PLUGIN_UID_SPAN = 0x0FFFFFFF


def plugin_uid(installation_id: str, plugin: str) -> int:
    """The uid (and gid) one plugin of one installation runs as: its replicas and revisions share it, and
    two plugins or two installations get different ones (a collision is a 1 in 2**28 chance per pair)."""
    digest = hashlib.sha256(f"{installation_id}\0{plugin}".encode()).digest()
    return PLUGIN_UID_BASE + int.from_bytes(digest[:8], "big") % PLUGIN_UID_SPAN


def is_plugin_uid(uid: int) -> bool:
    """Whether `uid` is in the range `plugin_uid` draws from."""
    return PLUGIN_UID_BASE <= uid < PLUGIN_UID_BASE + PLUGIN_UID_SPAN


@dataclass(frozen=True)
class ResourceLimits:
    """Limits to apply to one instance, already checked against policy."""

    nano_cpus: int
    memory_bytes: int
    pids: int
    io_bytes_per_sec: int | None = None
    network_connections: int | None = None
    #: Log output kept on the host: at most `log_files` files of `log_max_bytes` each (rotated, oldest dropped).
    log_max_bytes: int = 10 * 1024 * 1024
    log_files: int = 3
    #: Size of the plugin's /data filesystem (None: the runtime's own default, e.g. a cluster's emptyDir).
    data_bytes: int | None = None


@dataclass(frozen=True)
class LivenessCheck:
    """How often an instance's health is probed, how long a probe waits, and how many failures in a row
    mean it is wedged (the manifest's `liveness:`; Kubernetes turns it into the pod's livenessProbe)."""

    interval_s: float = 10.0
    timeout_s: float = 2.0
    failures: int = 3
    #: Seconds a starting instance gets before failed probes count (the manifest's readiness timeout).
    start_s: float = 30.0


@dataclass(frozen=True)
class EgressAllowance:
    """One destination an instance may connect to: an IP, CIDR or host name, and ports (empty = any)."""

    host: str
    ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class ResourceReport:
    """Limits the engine actually applied to an instance, its live usage, and where it differs from the spec."""

    applied: Mapping[str, object]
    usage: Mapping[str, object]
    mismatches: tuple[str, ...] = ()


@dataclass(frozen=True)
class InstanceSpec:
    """Everything a driver needs to start one plugin instance."""

    name: str
    image: str
    labels: Mapping[str, str]
    environment: Mapping[str, str]
    socket_dir: Path
    #: Name of the plugin's persistent data volume (shared by its instances and revisions).
    data_volume: str
    limits: ResourceLimits
    #: No network at all when empty; otherwise only these destinations are reachable.
    egress: tuple[EgressAllowance, ...] = ()
    #: Secret the instance requires on every call but health checks (authenticates TCP endpoints).
    token: str = ""
    #: The plugin's own uid and gid (`plugin_uid`); the image's files stay root's.
    uid: int = PLUGIN_UID
    #: Private host directory of the plugin's data (Docker: its filesystem image and mountpoint).
    data_dir: Path | None = None
    #: When the runtime restarts a wedged instance by itself (Kubernetes); `sysops serve` supervises Docker.
    liveness: LivenessCheck = LivenessCheck()
    #: Development mode: the host directory of the plugin's code snapshots, mounted read-only (imaging/dev_code.py).
    code_dir: Path | None = None


@dataclass(frozen=True)
class InstanceStatus:
    """What the engine reports about an instance."""

    handle: str
    name: str
    labels: Mapping[str, str]
    running: bool
    exit_code: int | None = None
    oom_killed: bool = False
    error: str = ""
    started_at: str = ""
    #: When the instance last stopped (engine timestamp), "" when unknown or never.
    finished_at: str = ""
    pid: int = 0
    restart_count: int = 0
    #: The engine is about to start the instance again (a crash within its restart policy, in the backoff
    #: before the restart): stopped, yet not given up on. Docker counts the restart when it decides it.
    restarting: bool = False
    #: Image the instance was created from (an image id locally), "" when unknown.
    image: str = ""
    #: gRPC address of the instance when the driver decides it (TCP in a cluster); "" for the Unix socket.
    endpoint: str = ""
    token: str = ""


@dataclass(frozen=True)
class BuiltImage:
    """An image the driver built."""

    id: str
    tag: str
    digest: str


@dataclass
class BuildRequest:
    """A build context (a tar file, Dockerfile at its root, streamed to the engine) and what to call the result."""

    context: Path
    tag: str
    labels: dict[str, str] = field(default_factory=dict)


ProgressCallback = Callable[[str], None]


class StreamCancel:
    """Ends a blocking log follow from another thread (a server whose client went away).

    The driver attaches how to close its stream as soon as it opens one; `cancel()` closes it, so the
    thread reading it returns at once instead of waiting for the next log line.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closers: list[Callable[[], None]] = []
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        """Whether `cancel()` was called."""
        return self._cancelled

    def attach(self, close: Callable[[], None]) -> None:
        """Register how to close a stream; close it at once if already cancelled."""
        with self._lock:
            if not self._cancelled:
                self._closers.append(close)
                return
        with contextlib.suppress(Exception):
            close()

    def cancel(self) -> None:
        """Close every attached stream (once)."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            closers, self._closers = self._closers, []
        for close in closers:
            with contextlib.suppress(Exception):  # already closed, or the connection is gone
                close()


class RuntimeDriver(Protocol):
    """Operations every runtime (Docker, Kubernetes, the fake) provides."""

    name: str

    @property
    def restarts_stopped_instances(self) -> bool:
        """Whether reconciliation must start again an instance that stopped cleanly (exit 0, or 143/137 from a
        stop) without sysops asking: True for Docker, whose on-failure policy leaves such an instance stopped
        after an engine restart or a reboot; False where the runtime restarts it itself (Kubernetes: the kubelet).
        """

    @property
    def replaces_lost_instances(self) -> bool:
        """Whether reconciliation starts another instance of the same revision when a serving one is gone
        without sysops removing it: True for Kubernetes (no controller re-creates a plugin pod that was deleted,
        drained or lost with its node); False for Docker, where a container removed outside sysops was removed
        on purpose and the plugin is shown Failed instead.
        """

    def ping(self) -> None:
        """Raise EngineUnavailableError if the engine cannot be reached."""

    def image_id(self, reference: str) -> str | None:
        """Return the id of a local image, or None when it does not exist."""

    def image_labels(self, reference: str) -> dict[str, str] | None:
        """Return a local image's labels ({} when it has none), or None when the runtime cannot read them
        (no such image, or images live in a registry or on nodes: Kubernetes)."""

    def build_image(self, request: BuildRequest, progress: ProgressCallback) -> BuiltImage:
        """Build an image from a context; raise BuildError with the failing step."""

    def remove_image(self, reference: str) -> None:
        """Remove an image if present."""

    def start(self, spec: InstanceSpec) -> InstanceStatus:
        """Create and start an instance."""

    def inspect(self, handle: str) -> InstanceStatus | None:
        """Return the instance's status, or None when it no longer exists."""

    def list_instances(self, labels: Mapping[str, str]) -> list[InstanceStatus]:
        """List instances (running or not) that carry all the given labels."""

    def logs(
        self, handle: str, *, tail: int | None = None, follow: bool = False, cancel: StreamCancel | None = None
    ) -> Iterator[str]:
        """Yield log lines of an instance; `cancel` can end a follow from another thread."""

    def resources(self, handle: str, limits: ResourceLimits, *, sample_seconds: float = 0.0) -> ResourceReport:
        """Read back applied limits and live usage; list every difference from `limits` as a mismatch.

        `applied` and `usage` use the manifest's keys (`cpu_percent`, `memory_mb`, `pids`, ...); CPU usage
        is measured over `sample_seconds` (0: averaged since start, so the call does not wait).
        """

    def stop(self, handle: str, timeout: float) -> None:
        """Ask an instance to stop (SIGTERM), killing it after `timeout` seconds."""

    def restart(self, handle: str, timeout: float) -> None:
        """Stop an instance (SIGTERM, SIGKILL after `timeout` s) and start it again as the same instance: same
        id, socket, token and data, so routing keeps working (the supervisor restarts a wedged one)."""

    def remove(self, handle: str) -> None:
        """Remove a stopped or running instance."""

    def remove_volume(self, name: str) -> None:
        """Remove a data volume if present."""

    def maintain(self, labels: Mapping[str, str]) -> None:
        """Supervise instances carrying `labels` where the runtime needs it (Docker: restart budget, orphaned
        network holders); called by reconciliation while it holds the plugin's lock."""

    def remove_labelled(self, labels: Mapping[str, str]) -> int:
        """Remove every container, image and volume carrying all `labels` (left by a lost plugin); return the count."""


@runtime_checkable
class FollowsEngineEvents(Protocol):
    """A driver that can keep what it lists of one installation from the engine's events (the Docker driver)."""

    def follow_engine_events(self, installation: str, stop: threading.Event) -> None:
        """Follow the engine's events of `installation` until `stop`, so quiet reconcile passes ask nothing."""
        ...


@dataclass(frozen=True)
class MirroredPlugin:
    """A plugin's desired state as kept outside the local store (e.g. a Plugin custom resource)."""

    name: str
    source: str
    manifest: Mapping[str, object]
    revisions: tuple[Mapping[str, object], ...]


class StateMirror(Protocol):
    """Where a runtime keeps desired state that must survive the orchestrator (in a cluster: the cluster)."""

    def save(
        self, name: str, source: str, manifest: Mapping[str, object], revisions: Sequence[Mapping[str, object]]
    ) -> None:
        """Record a plugin's manifest and revisions after a successful roll."""

    def delete(self, name: str) -> None:
        """Forget a plugin (and, in a cluster, everything it owns)."""

    def load(self) -> list[MirroredPlugin]:
        """Return every recorded plugin."""
