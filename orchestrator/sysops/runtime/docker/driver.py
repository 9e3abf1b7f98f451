"""The Docker runtime driver: plugin instances as hardened containers, through the Docker SDK.

This is the only module that imports `docker`. Engine errors are translated here, at the boundary, into
sysops errors with one-line messages (bodies truncated so nothing large or secret reaches a terminal).
Every limit of the manifest is applied at create time (CPU quota, memory = memory+swap, pids, block-I/O
throttle on the data volume's disk, network mode; egress allow-lists and connection limits through a
network-holder container, see network.py), and `resources` reads back what the engine and the
kernel actually enforce (inspect and the cgroup files) so that any difference is an error.
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models import containers as docker_containers
from docker.models.containers import Container
from docker.types import LogConfig, Mount
from sysops_sdk.wire import DEV_ROOT

from sysops.errors import BuildError, EngineUnavailableError, ManifestError, NotFoundError, RuntimeOperationError
from sysops.runtime.base import (
    LABEL_INSTALLATION,
    LABEL_INSTANCE,
    LABEL_PLUGIN,
    BuildRequest,
    BuiltImage,
    InstanceSpec,
    InstanceStatus,
    ProgressCallback,
    ResourceLimits,
    ResourceReport,
    StreamCancel,
    is_plugin_uid,
    plugin_uid,
)
from sysops.runtime.docker import network as docker_network
from sysops.runtime.docker.cgroups import BlockDevice, CgroupLocator, CgroupReading, block_device_for
from sysops.runtime.docker.cpu_quota import CfsSettings, applied_percent, applied_settings, cfs_settings, nano_percent
from sysops.runtime.docker.data_filesystems import (
    data_size_bytes,
    ensure_data_filesystem,
    remount_data_filesystem,
    remove_data_filesystem,
    unmount_data_filesystem,
)
from sysops.runtime.docker.engine_view import EngineView, EventStream
from sysops.runtime.docker.log_stream import LINE_PIECE_BYTES, LogStream
from sysops.runtime.faults import (
    MAX_RESTARTS,
    BudgetAction,
    budget_action,
    engine_timestamp,
    stability_window,
    status_from_attrs,
)
from sysops.runtime.socket_dirs import (
    is_socket_tmpfs,
    mount_socket_tmpfs,
    recreate_socket_dir,
    unmount_socket_tmpfs,
)
from sysops.runtime.usage import usage_report

PLUGIN_SOCKET_DIR = "/run/sysops"
PLUGIN_DATA_DIR = "/data"
#: Marks containers that are not plugin instances but serve one (the network holder); never listed as instances.
LABEL_ROLE = "sysops.role"
LABEL_EGRESS = "sysops.egress"
ROLE_NETWORK = "network"
#: A holder whose plugin container is gone is removed once it is older than this (it may be mid-start before).
_ORPHAN_HOLDER_AGE = 120.0
#: Seconds of events replayed when the engine view subscribes (engine_view.py).
_EVENTS_REPLAY_SECONDS = 2
#: Longest log line `logs` yields in one piece (a plugin may print megabytes without a newline).
_MAX_LOG_LINE = LINE_PIECE_BYTES
_TMPFS = {"/tmp": "rw,noexec,nosuid,size=16m"}
_HARDENING: dict[str, Any] = {
    "read_only": True,
    "tmpfs": _TMPFS,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges:true"],
    "privileged": False,
    "init": False,
}
_MIB = 1024 * 1024
_ENGINE_HINT = (
    "start it (Debian: `apt-get install -y docker.io && dockerd &`, or run scripts/bootstrap.sh) "
    "or point DOCKER_HOST at a running engine"
)


def _short(text: object, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class DockerDriver:
    """Runs plugin instances as local Docker containers."""

    name = "docker"
    #: The on-failure policy leaves an instance the engine stopped (its restart, a reboot) stopped: the core starts it.
    restarts_stopped_instances = True
    #: A container removed outside sysops was removed on purpose: the plugin is shown Failed.
    replaces_lost_instances = False

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self._client = client
        #: The engine's CPU count, asked once (`docker info` costs tens of milliseconds on every start otherwise).
        self._engine_cpus: int | None = None
        #: The installation's containers kept by the engine's events (`follow_engine_events`; the resident host's).
        self._view: EngineView | None = None

    @property
    def client(self) -> docker.DockerClient:
        """The Docker client, created on first use (so errors name the engine, not an import)."""
        if self._client is None:
            try:
                self._client = docker.from_env(timeout=60)
                self._client.ping()
            except docker.errors.DockerException as exc:
                raise EngineUnavailableError(
                    f"Docker engine not reachable ({_short(exc, 120)})", hint=_ENGINE_HINT
                ) from exc
        return self._client

    def ping(self) -> None:
        """Raise EngineUnavailableError if the engine cannot be reached."""
        _ = self.client

    def follow_engine_events(self, installation: str, stop: threading.Event) -> None:
        """Keep `installation`'s listing and inspects from the engine's events until `stop` (engine_view.py), so
        reconciling a quiet installation asks the engine nothing; a thread of its own follows the stream."""

        events_client = docker.from_env(timeout=60)  # its own connection: the stream holds it for good

        def subscribe(filters: Mapping[str, object]) -> EventStream:
            # Replayed from a little before: the engine subscribes only after sending the response's headers.
            since = int(time.time()) - _EVENTS_REPLAY_SECONDS
            stream: EventStream = events_client.api.events(since=since, filters=dict(filters), decode=True)
            return stream

        self._view = EngineView(subscribe, installation)
        threading.Thread(target=self._view.run, args=(stop,), name="sysops-engine-events", daemon=True).start()

    def _engine_changed(self) -> None:
        """Something of ours changed a container: what the view holds is dropped now, not when the event comes."""
        if self._view is not None:
            self._view.changed()

    def image_id(self, reference: str) -> str | None:
        """Return the id of a local image, or None."""
        try:
            return str(self.client.images.get(reference).id)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot inspect image {reference}: {_short(exc)}") from exc

    def image_labels(self, reference: str) -> dict[str, str] | None:
        """Return a local image's labels, or None when the engine does not have it."""
        try:
            return dict(self.client.images.get(reference).labels or {})
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot inspect image {reference}: {_short(exc)}") from exc

    def build_image(self, request: BuildRequest, progress: ProgressCallback) -> BuiltImage:
        """Build with the classic builder and no network, streaming progress lines."""
        image_id = ""
        tail: list[str] = []
        try:
            with open(request.context, "rb") as context:
                stream = self.client.api.build(
                    fileobj=context,
                    custom_context=True,
                    tag=request.tag,
                    labels=request.labels,
                    rm=True,
                    forcerm=True,
                    network_mode="none",
                    decode=True,
                )
                for chunk in stream:
                    if "error" in chunk:
                        detail = "\n".join(tail[-8:])
                        raise BuildError(f"building {request.tag} failed: {_short(chunk['error'])}", details=detail)
                    line = str(chunk.get("stream", "")).rstrip()
                    if line:
                        tail.append(line)
                        if line.startswith("Step ") or line.startswith(" ---> Using cache"):
                            progress(line)
                    aux = chunk.get("aux")
                    if isinstance(aux, dict) and "ID" in aux:
                        image_id = str(aux["ID"])
        except docker.errors.APIError as exc:
            raise BuildError(f"building {request.tag} failed: {_short(exc)}") from exc
        except docker.errors.DockerException as exc:
            raise EngineUnavailableError(f"Docker engine failed during build: {_short(exc)}") from exc
        if not image_id:
            image_id = self.image_id(request.tag) or ""
        if not image_id:
            raise BuildError(f"building {request.tag} produced no image", details="\n".join(tail[-8:]))
        return BuiltImage(id=image_id, tag=request.tag, digest=image_id)

    def push_image(self, reference: str) -> None:
        """Push an image to its registry (for clusters whose nodes do not share this engine)."""
        try:
            for chunk in self.client.images.push(reference, stream=True, decode=True):
                if isinstance(chunk, dict) and "error" in chunk:
                    raise RuntimeOperationError(f"pushing {reference} failed: {_short(chunk['error'])}")
        except docker.errors.APIError as exc:  # the registry, not the plugin: exit 6 like a failed pull
            raise RuntimeOperationError(f"pushing {reference} failed: {_short(exc)}") from exc

    def pull_image(self, reference: str, progress: ProgressCallback) -> str:
        """Pull `REPO:TAG` or `REPO@sha256:...` from its registry; return the local image id. A reference the
        registry does not have is a NotFoundError; the engine verifies the content of a pull by digest."""
        try:
            for chunk in self.client.api.pull(reference, stream=True, decode=True):
                if isinstance(chunk, dict) and "error" in chunk:
                    raise _pull_error(reference, str(chunk["error"]))
                status = str(chunk.get("status", "")) if isinstance(chunk, dict) else ""
                if status.startswith(("Digest:", "Status:")):
                    progress(status)
        except docker.errors.APIError as exc:
            raise _pull_error(reference, str(exc.explanation or exc)) from None
        image_id = self.image_id(reference)
        if image_id is None:
            raise RuntimeOperationError(f"pulling {reference} left no image in the engine")
        return image_id

    def repo_digests(self, reference: str) -> list[str]:
        """The `REPO@sha256:...` digests the engine records for a local image (empty when it has no such image)."""
        try:
            return [str(digest) for digest in self.client.images.get(reference).attrs.get("RepoDigests") or []]
        except docker.errors.ImageNotFound:
            return []
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot inspect image {reference}: {_short(exc)}") from exc

    def tag_image(self, image: str, repository: str, tag: str) -> None:
        """Tag a local image as `repository:tag` (before a push)."""
        try:
            self.client.images.get(image).tag(repository, tag)
        except docker.errors.ImageNotFound:
            raise NotFoundError(f"image {image} not found in the engine") from None
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot tag {image} as {repository}:{tag}: {_short(exc)}") from exc

    def read_image_file(self, image: str, path: str, max_bytes: int) -> bytes | None:
        """The content of the regular file `path` in `image`, read from a created (never started) container that is
        removed at once; None when the image has no such file. Larger than `max_bytes` is refused."""
        try:
            container = self.client.containers.create(image, command=["true"], network_disabled=True)
        except docker.errors.ImageNotFound:
            raise NotFoundError(f"image {image} not found in the engine") from None
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot read {path} from image {image}: {_short(exc)}") from exc
        try:
            stream, stat = container.get_archive(path)
            if int((stat or {}).get("size", 0)) > max_bytes:
                raise ManifestError(f"{path} in image {image} is larger than {max_bytes} bytes")
            return _single_file(b"".join(stream), max_bytes)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot read {path} from image {image}: {_short(exc)}") from exc
        finally:
            container.remove(force=True)

    def remove_image(self, reference: str) -> None:
        """Remove an image if present."""
        try:
            self.client.images.remove(reference, force=True, noprune=False)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot remove image {reference}: {_short(exc)}") from exc

    def start(self, spec: InstanceSpec) -> InstanceStatus:
        """Create and start a hardened, limited container for one plugin instance."""
        limits = spec.limits
        plugin = spec.labels.get(LABEL_PLUGIN, spec.name)
        self._check_cpus(limits.nano_cpus, plugin)
        mountpoint = self._ensure_volume(spec)
        cpu = cfs_settings(limits.nano_cpus)
        if os.geteuid() == 0:  # the caller removes the directory, and with it this mount, if the start fails
            mount_socket_tmpfs(spec.socket_dir, spec.uid)
        kwargs: dict[str, Any] = {
            **_HARDENING,
            "user": _user(spec.uid),
            "name": spec.name,
            "labels": dict(spec.labels),
            "environment": {**spec.environment, **({"SYSOPS_TOKEN": spec.token} if spec.token else {})},
            "detach": True,
            "network_mode": "none",
            "cpu_period": cpu.period,  # a period that lets a start run unthrottled (cpu_quota.py)
            "cpu_quota": cpu.quota,
            "mem_limit": limits.memory_bytes,
            "memswap_limit": limits.memory_bytes,
            "pids_limit": limits.pids,
            "stop_signal": "SIGTERM",
            "log_config": _log_config(limits),
            # The engine's restart manager backs off exponentially (100 ms doubling) and gives up after the cap.
            "restart_policy": {"Name": "on-failure", "MaximumRetryCount": MAX_RESTARTS},
            "mounts": [
                Mount(target=PLUGIN_SOCKET_DIR, source=str(spec.socket_dir), type="bind"),
                # no_copy: the engine would give the volume the image's /data owner (the base image's uid).
                Mount(target=PLUGIN_DATA_DIR, source=spec.data_volume, type="volume", no_copy=True),
            ],
        }
        if spec.code_dir is not None:  # development mode: the plugin's code snapshots, read-only
            kwargs["mounts"].append(Mount(target=DEV_ROOT, source=str(spec.code_dir), type="bind", read_only=True))
        if limits.io_bytes_per_sec:
            device = self._io_device(mountpoint, plugin)
            throttle = [{"Path": device.path, "Rate": limits.io_bytes_per_sec}]
            kwargs["device_read_bps"] = throttle
            kwargs["device_write_bps"] = throttle
        holder = self._start_network_holder(spec) if spec.egress else None
        if holder is not None:
            kwargs["network_mode"] = f"container:{holder.id}"
        created = ""
        try:
            # Create and start, not `containers.run`: that inspects the container it created as well, an engine
            # round trip on the path of every roll for attributes nothing reads before the instance answers.
            arguments = {**kwargs, "image": spec.image, "command": None, "version": self.client.api.api_version}
            create_arguments = docker_containers._create_container_args(arguments)  # type: ignore[attr-defined]
            created = str(self.client.api.create_container(**create_arguments)["Id"])
            self._engine_changed()
            try:
                self.client.api.start(created)
            finally:
                self._engine_changed()  # what a pass listed between create and start said "created"
        except docker.errors.ImageNotFound as exc:
            self._remove_holders(spec.labels)
            raise RuntimeOperationError(f"image {spec.image} not found for {spec.name}") from exc
        except docker.errors.APIError as exc:
            if created:
                self._force_remove(created)
            self._remove_holders(spec.labels)
            raise RuntimeOperationError(f"cannot start container {spec.name}: {_short(exc)}") from exc
        return InstanceStatus(
            handle=created, name=spec.name, labels=dict(spec.labels), running=True, image=spec.image, token=spec.token
        )

    def _check_cpus(self, nano_cpus: int, plugin: str) -> None:
        """Refuse, naming the key (exit 4), a CPU limit above the engine's CPUs: the engine's refusal names none."""
        if self._engine_cpus is None:
            try:
                self._engine_cpus = int(self.client.info().get("NCPU") or 0)
            except docker.errors.APIError:
                return  # an engine that does not answer is reported by the start itself
        cpus = self._engine_cpus
        if cpus and nano_cpus > cpus * 1_000_000_000:
            raise ManifestError(
                f"{plugin}: limits.cpu_percent {nano_cpus / 10_000_000:g} is more than the engine's {cpus} CPUs",
                hint=f"set limits.cpu_percent to at most {cpus * 100} in plugin.yaml",
            )

    def _ensure_volume(self, spec: InstanceSpec) -> str:
        """Mount the plugin's size-limited data filesystem (data_filesystems.py) and hand it to the engine as
        the plugin's labelled volume; return where it is mounted on the host."""
        plugin = spec.labels.get(LABEL_PLUGIN, spec.name)
        if spec.data_dir is None or spec.limits.data_bytes is None:
            raise RuntimeOperationError(f"{plugin}: no data directory and size given for /data")
        labels = {key: spec.labels[key] for key in (LABEL_INSTALLATION, LABEL_PLUGIN) if key in spec.labels}
        try:
            try:
                volume = self.client.volumes.get(spec.data_volume)
            except docker.errors.NotFound:
                volume = None
            older = "" if volume is not None else self._older_data_volume(labels)
            mountpoint = ensure_data_filesystem(spec.data_dir, spec.limits.data_bytes, spec.uid, plugin, older)
            if volume is None:
                options = {"type": "none", "o": "bind", "device": str(mountpoint)}
                self.client.volumes.create(spec.data_volume, driver="local", driver_opts=options, labels=labels)
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot create volume {spec.data_volume}: {_short(exc)}") from exc
        return str(mountpoint)

    def _older_data_volume(self, labels: Mapping[str, str]) -> str:
        """Where the plugin's data volume of an older sysops (a plain directory, no size) is, "" if none."""
        if len(labels) < 2:
            return ""
        selector = [f"{key}={value}" for key, value in labels.items()]
        for volume in self.client.volumes.list(filters={"label": selector}):
            if not (volume.attrs.get("Options") or {}).get("device"):
                return str(volume.attrs.get("Mountpoint") or "")
        return ""

    def _io_device(self, mountpoint: str, plugin: str) -> BlockDevice:
        """The disk behind the data volume (or the engine's root dir); refuse the limit if there is none."""
        candidates = [mountpoint] if mountpoint and os.path.exists(mountpoint) else []
        candidates.append(str(self.client.info().get("DockerRootDir") or "/var/lib/docker"))
        for directory in candidates:
            device = block_device_for(directory)
            if device is not None:
                return device
        raise RuntimeOperationError(
            f"{plugin}: limits.disk_io_mb_per_sec cannot be enforced here: no local block device backs "
            f"the data volume ({candidates[0]})",
            hint="remove disk_io_mb_per_sec from plugin.yaml, or run the engine on a host with a block device",
        )

    def _start_network_holder(self, spec: InstanceSpec) -> Container:
        """Start the container that owns the instance's network namespace, with the firewall programmed."""
        plugin = spec.labels.get(LABEL_PLUGIN, spec.name)
        docker_network.check_host_support(plugin)
        resolved = docker_network.resolve(spec.egress, plugin)
        labels = {key: value for key, value in spec.labels.items() if key != "sysops.source"}
        labels[LABEL_ROLE] = ROLE_NETWORK
        labels[LABEL_EGRESS] = ",".join(docker_network.expected_allowed(resolved.destinations))
        try:
            holder = self.client.containers.run(
                spec.image,
                **_HARDENING,
                user=_user(spec.uid),
                name=f"{spec.name}-net",
                entrypoint=["python", "-c", "import signal; signal.pause()"],
                labels=labels,
                detach=True,
                nano_cpus=100_000_000,
                mem_limit=32 * _MIB,
                memswap_limit=32 * _MIB,
                pids_limit=8,
                extra_hosts=resolved.hosts,
            )
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot start the network holder of {spec.name}: {_short(exc)}") from exc
        finally:
            self._engine_changed()
        try:
            holder.reload()
            pid = int(holder.attrs.get("State", {}).get("Pid") or 0)
            if pid <= 0:
                raise RuntimeOperationError(f"the network holder of {spec.name} did not start")
            docker_network.apply(pid, resolved.destinations, spec.limits.network_connections, plugin)
        except BaseException:
            self._remove_holders(spec.labels)
            raise
        return holder

    def _holders(self, labels: Mapping[str, str]) -> list[Container]:
        selector = {LABEL_ROLE: ROLE_NETWORK}
        for key in (LABEL_INSTALLATION, LABEL_INSTANCE):
            if key in labels:
                selector[key] = labels[key]
        filters: dict[str, str | list[str] | bool] = {"label": [f"{k}={v}" for k, v in selector.items()]}
        try:
            return list(self.client.containers.list(all=True, filters=filters))
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot list network holders: {_short(exc)}") from exc

    def _remove_holders(self, labels: Mapping[str, str]) -> None:
        """Remove the network holder(s) of one instance (both labels must be known)."""
        if LABEL_INSTANCE not in labels or LABEL_INSTALLATION not in labels:
            return
        for holder in self._holders(labels):
            self._force_remove(str(holder.id))

    def inspect(self, handle: str) -> InstanceStatus | None:
        """Return a container's status, or None when it is gone (as the engine view holds it, if it does)."""
        held = self._view.held(handle) if self._view is not None else None
        if held is not None:
            return status_from_attrs(held)
        try:
            container = self.client.containers.get(handle)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot inspect container {handle[:12]}: {_short(exc)}") from exc
        return self._status(container)

    def list_instances(self, labels: Mapping[str, str]) -> list[InstanceStatus]:
        """List instances carrying all `labels`, running or not (never a build's containers: see `_labelled`)."""
        containers = self._labelled(labels)
        for holder in _orphan_holders(containers):
            self._remove_orphan_holder(holder)
        return [self._status(container) for container in containers if LABEL_ROLE not in (container.labels or {})]

    def _labelled(self, labels: Mapping[str, str]) -> list[Container]:
        """Instances and network holders carrying all `labels`: only those carry LABEL_INSTANCE (set by `start`).

        The steps of a `docker build` of a plugin's image run in containers with the image's labels
        (installation, plugin): counting those as instances would let a reconcile remove a build in progress.
        """
        selector = [f"{key}={value}" for key, value in labels.items()] + [LABEL_INSTANCE]
        filters: dict[str, str | list[str] | bool] = {"label": selector}
        try:
            view = self._view
            held = view.labelled(labels, _Fetch(self.client.api, view.installation)) if view is not None else None
            if held is not None:
                return [self.client.containers.prepare_model(attrs) for attrs in held]
            return list(self.client.containers.list(all=True, filters=filters))
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot list containers: {_short(exc)}") from exc

    def maintain(self, labels: Mapping[str, str]) -> None:
        """Supervise the instances carrying `labels`; call it holding their plugin's lock (no start in progress).

        Removes network holders whose plugin container is gone (at once: no start can be between the two),
        keeps the restart budget fair (`faults.budget_action`): an instance that ran stably gets its budget
        back, and one the engine gave up on after a crash that ended a stable run is started again. An
        instance whose socket tmpfs or /data was not mounted (after a host reboot) gets them back, and is
        started again if it stopped for want of them.
        """
        containers = self._labelled(labels)
        for holder in _orphan_holders(containers):
            self._force_remove(str(holder.id))
        window = stability_window()
        for container in containers:
            if LABEL_ROLE in (container.labels or {}):
                continue
            state = container.attrs.get("State") or {}
            remounted = self._restore_mounts(container.attrs)
            if remounted and not state.get("Running") and not state.get("Restarting"):
                action = BudgetAction.RESTART
            else:
                action = budget_action(container.attrs, time.time(), window)
            if action is BudgetAction.KEEP:
                continue
            restarts = int(container.attrs.get("RestartCount") or 0)
            # `docker start` sets the engine's count back to 0; a running instance keeps its count.
            allowed = MAX_RESTARTS if action is BudgetAction.RESTART else restarts + MAX_RESTARTS
            try:
                container.update(restart_policy={"Name": "on-failure", "MaximumRetryCount": allowed})
                if action is BudgetAction.RESTART:
                    container.start()
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as exc:
                raise RuntimeOperationError(
                    f"cannot renew the restart budget of {container.name}: {_short(exc)}"
                ) from exc
            finally:
                self._engine_changed()

    def _restore_mounts(self, attrs: Mapping[str, Any]) -> bool:
        """Mount a plugin container's socket tmpfs and data filesystem again where they are missing (a host
        reboot drops both); return whether anything was mounted."""
        if os.geteuid() != 0:
            return False
        restored = False
        user = str((attrs.get("Config") or {}).get("User") or "")
        uid = int(user.split(":")[0]) if user.split(":")[0].isdecimal() else -1
        socket_dir = _mount_source(attrs, PLUGIN_SOCKET_DIR)
        if is_plugin_uid(uid) and recreate_socket_dir(socket_dir) and not is_socket_tmpfs(socket_dir):
            mount_socket_tmpfs(Path(socket_dir), uid)
            restored = True
        volume = _mount_source(attrs, PLUGIN_DATA_DIR, "Name")
        device = self._held_data_device(str(attrs.get("Id") or ""), volume) if volume else ""
        plugin = str(((attrs.get("Config") or {}).get("Labels") or {}).get(LABEL_PLUGIN, ""))
        return (bool(device) and remount_data_filesystem(device, plugin)) or restored

    def remove_labelled(self, labels: Mapping[str, str]) -> int:
        """Remove every container, image and volume carrying all `labels`; return how many objects were removed."""
        selector = [f"{key}={value}" for key, value in labels.items()]
        removed = 0
        try:
            # The engine's list alone (no inspect per container, as the SDK's non-sparse list makes): a container
            # removed in between by someone else (the kubelet deleting a pod's) is not an error.
            for container in self.client.api.containers(all=True, filters={"label": selector}):
                self._force_remove(str(container["Id"]))
                unmount_socket_tmpfs(_mount_source(container, PLUGIN_SOCKET_DIR))
                removed += 1
            for image in self.client.images.list(filters={"label": selector}):
                self.remove_image(str(image.id))
                removed += 1
            for volume in self.client.volumes.list(filters={"label": selector}):
                self.remove_volume(str(volume.name))
                removed += 1
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot remove what carries {', '.join(selector)}: {_short(exc)}") from exc
        return removed

    def _remove_orphan_holder(self, holder: Container) -> None:
        """Remove a network holder whose plugin container is gone, unless it may still be starting."""
        created = engine_timestamp(str(holder.attrs.get("Created") or ""))
        if created is not None and time.time() - created > _ORPHAN_HOLDER_AGE:
            self._force_remove(str(holder.id))

    def logs(
        self, handle: str, *, tail: int | None = None, follow: bool = False, cancel: StreamCancel | None = None
    ) -> Iterator[str]:
        """Yield log lines (stdout and stderr) of a container as the engine streams them.

        Memory stays bounded whatever the log size: chunks are split into lines as they arrive, and a line
        longer than `_MAX_LOG_LINE` bytes is cut into pieces of that size. `tail` is read by the engine
        from the end of the log; `cancel` closes a follow from another thread.
        """
        try:
            tty = bool((self.client.api.inspect_container(handle).get("Config") or {}).get("Tty"))
            stream = LogStream(self.client.api, handle, tty=tty, tail=tail, follow=follow)
            if cancel is not None:
                cancel.attach(stream.close)
            try:
                yield from _lines(stream)
            finally:
                stream.close()
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot read logs of {handle[:12]}: {_short(exc)}") from exc

    def resources(self, handle: str, limits: ResourceLimits, *, sample_seconds: float = 0.0) -> ResourceReport:
        """Compare what the engine (inspect) and the kernel (cgroup files, netns firewall) apply with `limits`.

        Keys of `applied` and `usage` are the manifest's (`cpu_percent`, `memory_mb`, ...). CPU usage is
        sampled from cgroup accounting over `sample_seconds`, or averaged since start when that is 0.
        """
        try:
            attrs = self.client.api.inspect_container(handle)
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot inspect container {handle[:12]}: {_short(exc)}") from exc
        host, state = attrs.get("HostConfig") or {}, attrs.get("State") or {}
        running = bool(state.get("Running")) and not state.get("Restarting")
        pid = int(state.get("Pid") or 0)
        mismatches: list[str] = []

        def check(key: str, asked: object, applied: object, where: str) -> None:
            if asked != applied:
                mismatches.append(f"{key}: asked {asked}, applied {applied} ({where})")

        io_rate = limits.io_bytes_per_sec
        engine_io = {
            d.get("Rate") for d in (host.get("BlkioDeviceReadBps") or []) + (host.get("BlkioDeviceWriteBps") or [])
        }
        asked_cpu, applied_cpu = cfs_settings(limits.nano_cpus), applied_settings(host)
        if applied_cpu is None:  # NanoCpus (a container of an older sysops), or no CPU limit at all
            check("limits.cpu_percent", nano_percent(limits.nano_cpus), applied_percent(host), "engine")
        else:
            check("limits.cpu_percent", asked_cpu.percent, applied_cpu.percent, "engine")
            check("cpu period (us)", asked_cpu.period, applied_cpu.period, "engine")
        check("limits.memory_mb", _mb(limits.memory_bytes), _mb(host.get("Memory") or 0), "engine")
        check("memory+swap (MiB)", _mb(limits.memory_bytes), _mb(host.get("MemorySwap") or 0), "engine")
        check("limits.pids", limits.pids, host.get("PidsLimit"), "engine")
        check("limits.disk_io_mb_per_sec", _rates({io_rate} if io_rate else set()), _rates(engine_io), "engine")
        self._check_hardening(attrs, check)
        check("logs", _log_text(_log_config(limits)), _log_text(host.get("LogConfig") or {}), "engine")

        applied: dict[str, object] = {
            "cpu_percent": applied_percent(host),
            "memory_mb": _mb(host.get("Memory") or 0),
            "memory_swap_mb": _mb(host.get("MemorySwap") or 0),
            "pids": host.get("PidsLimit"),
            "disk_io_mb_per_sec": _rates(engine_io),
            "logs": _log_text(host.get("LogConfig") or {}),
        }
        if limits.data_bytes is not None:
            size = self._data_size(attrs)
            applied["data_mb"] = _mb(size) if size is not None else None
            check("limits.data_mb", _mb(limits.data_bytes), applied["data_mb"], "/data filesystem image")
        usage: dict[str, object] = {}
        reading = CgroupLocator().read(pid, str(attrs.get("Id")), host.get("CgroupParent") or "/docker")
        if reading is None and running:
            mismatches.append("cgroup: the container's cgroup files are not readable on this host, limits unverified")
        if reading is not None:
            applied.update(self._check_cgroup(reading, limits, check))
            usage = self._usage(reading, pid, attrs, sample_seconds)
        applied.update(self._check_network(host, pid, running, limits, check))
        return ResourceReport(applied=applied, usage=usage, mismatches=tuple(mismatches))

    def _data_size(self, attrs: Mapping[str, Any]) -> int | None:
        """Size of the filesystem behind the container's /data volume (None: not a data filesystem of ours)."""
        name = _mount_source(attrs, PLUGIN_DATA_DIR, "Name")
        device = self._data_device(name) if name else ""
        return data_size_bytes(device) if device else None

    def _held_data_device(self, container_id: str, volume: str) -> str:
        """`_data_device` of a container's volume, asked once while the view holds the container."""
        if self._view is None or not container_id:
            return self._data_device(volume)
        return self._view.derived(container_id, f"device:{volume}", lambda: self._data_device(volume))

    def _data_device(self, name: str) -> str:
        """The host mountpoint a data volume binds ("" when the volume is gone or a plain one)."""
        try:
            volume = self.client.volumes.get(name)
        except docker.errors.NotFound:
            return ""
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot inspect volume {name}: {_short(exc)}") from exc
        return str((volume.attrs.get("Options") or {}).get("device") or "")

    def _check_hardening(self, attrs: Mapping[str, Any], check: Any) -> None:
        host, config = attrs.get("HostConfig") or {}, attrs.get("Config") or {}
        labels = config.get("Labels") or {}
        owner = plugin_uid(str(labels.get(LABEL_INSTALLATION, "")), str(labels.get(LABEL_PLUGIN, "")))
        check("user", _user(owner), config.get("User"), "engine")
        check("read-only root filesystem", True, host.get("ReadonlyRootfs"), "engine")
        check("capabilities dropped", ["ALL"], host.get("CapDrop"), "engine")
        check("capabilities added", [], host.get("CapAdd") or [], "engine")
        check("privileged", False, host.get("Privileged"), "engine")
        options = host.get("SecurityOpt") or []
        check("no-new-privileges", True, "no-new-privileges:true" in options, "engine")
        check("seccomp", "default", "unconfined" if any("unconfined" in o for o in options) else "default", "engine")
        sources = sorted(str(m.get("Source") or m.get("Name") or "") for m in attrs.get("Mounts") or [])
        check("host paths", True, not any("docker.sock" in source for source in sources), "engine")
        mounts = attrs.get("Mounts") or []
        code = [m for m in mounts if m.get("Destination") == DEV_ROOT]  # development mode's, read-only
        check("code mount", [False] * len(code), [bool(m.get("RW")) for m in code], "engine (RW)")
        check(
            "mounts",
            [PLUGIN_DATA_DIR, PLUGIN_SOCKET_DIR],
            sorted(m.get("Destination") for m in mounts if m not in code),
            "engine",
        )

    @staticmethod
    def _check_cgroup(reading: CgroupReading, limits: ResourceLimits, check: Any) -> dict[str, object]:
        values = reading.limits
        v1 = reading.version == 1
        quota, period = values.get("cpu_quota_us"), values.get("cpu_period_us")
        cpu = (
            CfsSettings(period, quota).percent
            if isinstance(quota, int) and isinstance(period, int) and period
            else None
        )
        ours = cfs_settings(limits.nano_cpus)  # a container of an older sysops has Docker's 100 ms period
        asked_percent = ours.percent if period == ours.period else nano_percent(limits.nano_cpus)
        check("limits.cpu_percent", asked_percent, cpu, "cpu.cfs_quota_us" if v1 else "cpu.max")
        memory = values.get("memory_limit_bytes")
        check("limits.memory_mb", _mb(limits.memory_bytes), _mb(memory) if isinstance(memory, int) else memory,
              "memory.limit_in_bytes" if v1 else "memory.max")  # fmt: skip
        swap = values.get("memory_swap_limit_bytes")
        if v1 and swap is not None:
            check("memory+swap (MiB)", _mb(limits.memory_bytes), _mb(int(str(swap))), "memory.memsw.limit_in_bytes")
        elif not v1:
            check("swap (MiB)", 0, _mb(swap) if isinstance(swap, int) else swap, "memory.swap.max")
        check("limits.pids", limits.pids, values.get("pids_max"), "pids.max")
        rates: set[object] = set()
        for key in ("read_bps", "write_bps"):
            per_device = values.get(key)
            rates |= set(per_device.values()) if isinstance(per_device, dict) else set()
            asked = {limits.io_bytes_per_sec} if limits.io_bytes_per_sec else set()
            got = set(per_device.values()) if isinstance(per_device, dict) else set()
            where = ("blkio.throttle." if v1 else "io.max ") + key
            check("limits.disk_io_mb_per_sec", _rates(asked), _rates(got), where)
        applied: dict[str, object] = {"cpu_percent": cpu, "pids": values.get("pids_max")}
        if isinstance(memory, int):
            applied["memory_mb"] = _mb(memory)
        if rates:
            applied["disk_io_mb_per_sec"] = _rates(rates)
        return applied

    def _check_network(
        self, host: Mapping[str, Any], pid: int, running: bool, limits: ResourceLimits, check: Any
    ) -> dict[str, object]:
        mode = str(host.get("NetworkMode") or "")
        if mode == "none":
            # No interface but loopback: zero outbound connections, whatever the limit says.
            return {"network": "none", "network_connections": 0}
        if not mode.startswith("container:"):
            check("network", "none or an allow-list", mode, "engine")
            return {"network": mode}
        holder_id = mode.removeprefix("container:")
        try:
            holder = self.client.api.inspect_container(holder_id)
        except docker.errors.APIError:
            check("network", "allow-list", "holder container missing", "engine")
            return {"network": "allow-list (holder missing)"}
        expected = (holder.get("Config", {}).get("Labels") or {}).get(LABEL_EGRESS, "")
        if not running:
            return {"network": f"allow-list {expected}"}
        firewall = docker_network.read_back(pid)
        if firewall is None:
            check("network", "allow-list", "firewall not readable", "iptables -S")
            return {"network": "allow-list (unverified)"}
        check("network", expected, ",".join(firewall.allowed), "iptables -S")
        check("network (reject the rest)", True, firewall.rejects_rest, "iptables -S")
        check("limits.network_connections", limits.network_connections, firewall.connection_limit, "iptables connlimit")
        return {"network": f"allow-list {','.join(firewall.allowed)}", "network_connections": firewall.connection_limit}

    @staticmethod
    def _usage(reading: CgroupReading, pid: int, attrs: Mapping[str, Any], sample_seconds: float) -> dict[str, object]:
        raw = reading.usage
        cores: float | None = None
        if sample_seconds > 0:
            parent = (attrs.get("HostConfig") or {}).get("CgroupParent") or "/docker"
            cores = CgroupLocator().sample_cpu_cores(pid, str(attrs.get("Id")), sample_seconds, parent)
        else:
            started = engine_timestamp(str((attrs.get("State") or {}).get("StartedAt") or ""))
            used = raw.get("cpu_usage_ns")
            if started is not None and used is not None and time.time() > started:
                cores = used / 1e9 / (time.time() - started)
        return usage_report(raw, cores, f"{sample_seconds:g}s" if sample_seconds > 0 else "since start")

    def stop(self, handle: str, timeout: float) -> None:
        """Send SIGTERM and kill after `timeout` seconds."""
        try:
            self.client.api.stop(handle, timeout=max(1, round(timeout)))
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot stop container {handle[:12]}: {_short(exc)}") from exc
        finally:
            self._engine_changed()

    def restart(self, handle: str, timeout: float) -> None:
        """Restart the container in place (same id, socket, token, data). The engine zeroes its crash count on
        a restart, so the retry cap goes back to MAX_RESTARTS: the count and the cap stay one budget."""
        try:
            self.client.api.restart(handle, timeout=max(1, round(timeout)))
            self.client.api.update_container(
                handle, restart_policy={"Name": "on-failure", "MaximumRetryCount": MAX_RESTARTS}
            )
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot restart container {handle[:12]}: {_short(exc)}") from exc
        finally:
            self._engine_changed()

    def remove(self, handle: str) -> None:
        """Force-remove a plugin container and its network holder, if it has one."""
        try:
            attrs = self.client.api.inspect_container(handle)
        except docker.errors.NotFound:
            attrs = {}
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot inspect container {handle[:12]}: {_short(exc)}") from exc
        labels, socket_dir = attrs.get("Config", {}).get("Labels") or {}, _mount_source(attrs, PLUGIN_SOCKET_DIR)
        self._force_remove(handle)
        if LABEL_ROLE not in labels:
            self._remove_holders(labels)
            unmount_socket_tmpfs(socket_dir)
            self._release_data(attrs)

    def _release_data(self, attrs: Mapping[str, Any]) -> None:
        """Unmount the plugin's data filesystem once no container of it is left (`down` without purge)."""
        name = _mount_source(attrs, PLUGIN_DATA_DIR, "Name")
        if not name:
            return
        try:
            if self.client.containers.list(all=True, filters={"volume": name}):
                return
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot list the containers of volume {name}: {_short(exc)}") from exc
        device = self._data_device(name)
        if device:
            unmount_data_filesystem(device)

    def _force_remove(self, handle: str) -> None:
        try:
            self.client.api.remove_container(handle, force=True, v=False)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                raise RuntimeOperationError(f"cannot remove container {handle[:12]}: {_short(exc)}") from exc
        finally:
            self._engine_changed()

    def remove_volume(self, name: str) -> None:
        """Remove a volume if present, and the data filesystem it stands for (unmounted, image deleted)."""
        try:
            volume = self.client.volumes.get(name)
            device = str((volume.attrs.get("Options") or {}).get("device") or "")
            volume.remove(force=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot remove volume {name}: {_short(exc)}") from exc
        if device:
            remove_data_filesystem(device)

    @staticmethod
    def _status(container: Container) -> InstanceStatus:
        return status_from_attrs(container.attrs)


def _pull_error(reference: str, message: str) -> NotFoundError | RuntimeOperationError:
    """A failed pull: NotFoundError when the registry has no such tag or digest."""
    lowered = message.lower()
    if "manifest unknown" in lowered or "not found" in lowered:
        return NotFoundError(f"{reference}: the registry has no such image ({_short(message, 160)})")
    return RuntimeOperationError(f"pulling {reference} failed: {_short(message)}")


def _single_file(archive: bytes, max_bytes: int) -> bytes | None:
    """The content of the one regular file in a tar from `get_archive` (None when it is not a regular file)."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.next()
        if member is None or not member.isfile() or member.size > max_bytes:
            return None
        extracted = tar.extractfile(member)
        return extracted.read(max_bytes) if extracted else None


class _Fetch:
    """How the engine view asks the engine: the listing with the driver's filters, and one inspect."""

    def __init__(self, api: docker.APIClient, installation: str) -> None:
        self._api = api
        self._filters = {"label": [f"{LABEL_INSTALLATION}={installation}", LABEL_INSTANCE]}

    def list_ids(self) -> list[str]:
        return [str(row["Id"]) for row in self._api.containers(all=True, filters=self._filters)]

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        try:
            attrs: dict[str, Any] = self._api.inspect_container(container_id)
        except docker.errors.NotFound:  # removed since the listing
            return None
        return attrs


def _orphan_holders(containers: Iterable[Container]) -> list[Container]:
    """The network holders among `containers` whose plugin container is not among them."""
    listed = list(containers)
    instances = {(c.labels or {}).get(LABEL_INSTANCE) for c in listed if LABEL_ROLE not in (c.labels or {})}
    return [
        c
        for c in listed
        if (c.labels or {}).get(LABEL_ROLE) == ROLE_NETWORK and c.labels.get(LABEL_INSTANCE) not in instances
    ]


def _mount_source(attrs: Mapping[str, Any], destination: str, field: str = "Source") -> str:
    """The host path (or, with `field="Name"`, the volume) a container has at `destination` ("" when none)."""
    sources = [m.get(field) for m in attrs.get("Mounts") or [] if m.get("Destination") == destination]
    return str(sources[0] or "") if sources else ""


def _user(uid: int) -> str:
    """The container's `user`: the plugin's own uid and gid."""
    return f"{uid}:{uid}"


def _log_config(limits: ResourceLimits) -> LogConfig:
    """json-file logs rotated at `log_max_bytes`, `log_files` files kept: the host disk a plugin's output may use."""
    return LogConfig(
        type="json-file", config={"max-size": str(limits.log_max_bytes), "max-file": str(limits.log_files)}
    )


def _log_text(config: Mapping[str, Any]) -> str:
    """`json-file, max-size 10485760, max-file 3` from a LogConfig as the engine reports it."""
    settings = config.get("Config") or {}
    return f"{config.get('Type')}, max-size {settings.get('max-size')}, max-file {settings.get('max-file')}"


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Split a stream of byte chunks into text lines, holding at most one line of `_MAX_LOG_LINE` bytes.

    The complete lines of a chunk are decoded at once (a newline is never part of a UTF-8 sequence, so this is
    line by line decoding); only when one of them may be longer than `_MAX_LOG_LINE` bytes (a character is at
    most 4 bytes) are they cut per line."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        cut = pending.rfind(b"\n")
        if cut >= 0:
            complete, pending = pending[:cut], pending[cut + 1 :]
            lines = complete.decode(errors="replace").split("\n")
            if max(map(len, lines)) <= _MAX_LOG_LINE // 4:
                yield from lines
            else:
                for line in complete.split(b"\n"):
                    yield from _pieces(line)
        while len(pending) > _MAX_LOG_LINE:
            yield pending[:_MAX_LOG_LINE].decode(errors="replace")
            pending = pending[_MAX_LOG_LINE:]
    if pending:
        yield pending.decode(errors="replace")


def _pieces(line: bytes) -> Iterator[str]:
    for start in range(0, max(len(line), 1), _MAX_LOG_LINE):
        yield line[start : start + _MAX_LOG_LINE].decode(errors="replace")


def _mb(value: int) -> float | int:
    mib = value / _MIB
    return int(mib) if mib.is_integer() else round(mib, 3)


def _rates(rates: set[Any]) -> object:
    """Byte rates as MiB/s for messages: None, one number, or a sorted list when devices differ."""
    values = sorted(_mb(int(rate)) for rate in rates if rate)
    return None if not values else values[0] if len(set(values)) == 1 else values
