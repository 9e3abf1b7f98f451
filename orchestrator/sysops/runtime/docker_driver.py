"""The Docker runtime driver: plugin instances as hardened containers, through the Docker SDK.

This is the only module that imports `docker`. Engine errors are translated here, at the boundary, into
sysops errors with one-line messages (bodies truncated so nothing large or secret reaches a terminal).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import Mount

from sysops.errors import BuildError, EngineUnavailableError, RuntimeOperationError
from sysops.runtime.base import (
    BuildRequest,
    BuiltImage,
    InstanceSpec,
    InstanceStatus,
    ProgressCallback,
    ResourceLimits,
    ResourceReport,
)

PLUGIN_SOCKET_DIR = "/run/sysops"
PLUGIN_DATA_DIR = "/data"
PLUGIN_USER = "10001:10001"
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

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self._client = client

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

    def image_id(self, reference: str) -> str | None:
        """Return the id of a local image, or None."""
        try:
            return str(self.client.images.get(reference).id)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot inspect image {reference}: {_short(exc)}") from exc

    def build_image(self, request: BuildRequest, progress: ProgressCallback) -> BuiltImage:
        """Build with the classic builder and no network, streaming progress lines."""
        image_id = ""
        tail: list[str] = []
        try:
            stream = self.client.api.build(
                fileobj=io.BytesIO(request.context),
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

    def remove_image(self, reference: str) -> None:
        """Remove an image if present."""
        try:
            self.client.images.remove(reference, force=True, noprune=False)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot remove image {reference}: {_short(exc)}") from exc

    def start(self, spec: InstanceSpec) -> InstanceStatus:
        """Create and start a hardened container for one plugin instance."""
        limits = spec.limits
        if spec.egress:
            raise RuntimeOperationError(
                f"{spec.labels.get('sysops.plugin', spec.name)}: network allow-lists are not supported by the docker "
                "runtime yet; use 'network: none'"
            )
        kwargs: dict[str, Any] = {
            "name": spec.name,
            "labels": dict(spec.labels),
            "environment": dict(spec.environment),
            "detach": True,
            "user": PLUGIN_USER,
            "read_only": True,
            "tmpfs": {"/tmp": "rw,noexec,nosuid,size=16m"},
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "network_mode": "none",
            "nano_cpus": limits.nano_cpus,
            "mem_limit": limits.memory_bytes,
            "memswap_limit": limits.memory_bytes,
            "pids_limit": limits.pids,
            "init": False,
            "stop_signal": "SIGTERM",
            "mounts": [
                Mount(target=PLUGIN_SOCKET_DIR, source=str(spec.socket_dir), type="bind"),
                Mount(target=PLUGIN_DATA_DIR, source=spec.data_volume, type="volume"),
            ],
        }
        try:
            container = self.client.containers.run(spec.image, **kwargs)
        except docker.errors.ImageNotFound as exc:
            raise RuntimeOperationError(f"image {spec.image} not found for {spec.name}") from exc
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot start container {spec.name}: {_short(exc)}") from exc
        return self._status(container)

    def inspect(self, handle: str) -> InstanceStatus | None:
        """Return a container's status, or None when it is gone."""
        try:
            container = self.client.containers.get(handle)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot inspect container {handle[:12]}: {_short(exc)}") from exc
        return self._status(container)

    def list_instances(self, labels: Mapping[str, str]) -> list[InstanceStatus]:
        """List containers carrying all `labels`, running or not."""
        filters: dict[str, str | list[str] | bool] = {"label": [f"{key}={value}" for key, value in labels.items()]}
        try:
            containers = self.client.containers.list(all=True, filters=filters)
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot list containers: {_short(exc)}") from exc
        return [self._status(container) for container in containers]

    def logs(self, handle: str, *, tail: int | None = None, follow: bool = False) -> Iterator[str]:
        """Yield log lines (stdout and stderr) of a container."""
        try:
            container = self.client.containers.get(handle)
            if not follow:
                raw = container.logs(stdout=True, stderr=True, tail=tail if tail is not None else "all")
                yield from raw.decode(errors="replace").splitlines()
                return
            pending = b""
            for chunk in container.logs(
                stdout=True, stderr=True, stream=True, follow=True, tail=tail if tail is not None else "all"
            ):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
            if pending:
                yield pending.decode(errors="replace")
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot read logs of {handle[:12]}: {_short(exc)}") from exc

    def resources(self, handle: str, limits: ResourceLimits) -> ResourceReport:
        """Compare what the engine applied (container inspect) with the asked limits."""
        try:
            host = self.client.api.inspect_container(handle)["HostConfig"]
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot inspect container {handle[:12]}: {_short(exc)}") from exc
        applied = {
            "nano_cpus": host.get("NanoCpus"),
            "memory_bytes": host.get("Memory"),
            "memory_swap_bytes": host.get("MemorySwap"),
            "pids": host.get("PidsLimit"),
        }
        expected = {
            "nano_cpus": limits.nano_cpus,
            "memory_bytes": limits.memory_bytes,
            "memory_swap_bytes": limits.memory_bytes,
            "pids": limits.pids,
        }
        mismatches = tuple(
            f"{key}: asked {expected[key]}, applied {applied[key]}" for key in expected if applied[key] != expected[key]
        )
        return ResourceReport(applied=applied, usage={}, mismatches=mismatches)

    def stop(self, handle: str, timeout: float) -> None:
        """Send SIGTERM and kill after `timeout` seconds."""
        try:
            self.client.api.stop(handle, timeout=max(1, round(timeout)))
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot stop container {handle[:12]}: {_short(exc)}") from exc

    def remove(self, handle: str) -> None:
        """Force-remove a container."""
        try:
            self.client.api.remove_container(handle, force=True, v=False)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                raise RuntimeOperationError(f"cannot remove container {handle[:12]}: {_short(exc)}") from exc

    def remove_volume(self, name: str) -> None:
        """Remove a volume if present."""
        try:
            self.client.volumes.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"cannot remove volume {name}: {_short(exc)}") from exc

    @staticmethod
    def _status(container: Container) -> InstanceStatus:
        attrs = container.attrs
        state = attrs.get("State", {})
        running = bool(state.get("Running")) and not state.get("Restarting")
        return InstanceStatus(
            handle=str(container.id),
            name=str(container.name),
            labels=dict(attrs.get("Config", {}).get("Labels") or {}),
            running=running,
            exit_code=None if running else int(state.get("ExitCode", 0)),
            oom_killed=bool(state.get("OOMKilled")),
            error=str(state.get("Error") or ""),
            started_at=str(state.get("StartedAt") or ""),
            pid=int(state.get("Pid") or 0),
            restart_count=int(attrs.get("RestartCount") or 0),
        )
