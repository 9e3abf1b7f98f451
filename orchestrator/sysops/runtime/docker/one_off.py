"""Run a one-off command in a container of an image to its end (`sysops plugin test` runs a plugin's tests so).

The container is hardened like a plugin instance (read-only root, a small /tmp, no network, no capabilities,
no new privileges, the plugin's non-root user), gets only read-only bind mounts, and is removed afterwards
whatever happened, Ctrl-C included. Its output is handed to the caller's `write` as it comes (the caller
decides how plugin-controlled bytes reach a terminal); the answer is the command's exit code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import docker
import docker.errors
from docker.types import Mount

from sysops.errors import EngineUnavailableError, RuntimeOperationError

_TMPFS = {"/tmp": "rw,nosuid,nodev,size=64m"}
_MIB = 1024 * 1024


@dataclass(frozen=True)
class OneOffRun:
    """What to run: the image, the command, read-only mounts (host path -> container path), environment."""

    image: str
    command: list[str]
    user: str
    read_only_mounts: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    memory_mb: int = 512
    pids: int = 256


def run_to_end(client: docker.DockerClient, run: OneOffRun, write: Callable[[bytes], None]) -> int:
    """Run `run` to its end, handing its output to `write`; its exit code. The container is always removed."""
    mounts = [Mount(target, source, type="bind", read_only=True) for source, target in run.read_only_mounts.items()]
    try:
        container = client.containers.create(
            run.image,
            command=run.command,
            entrypoint=run.entrypoint or None,
            user=run.user,
            environment=run.environment,
            labels=run.labels,
            mounts=mounts,
            network_mode="none",
            read_only=True,
            tmpfs=_TMPFS,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            mem_limit=run.memory_mb * _MIB,
            pids_limit=run.pids,
        )
    except docker.errors.APIError as exc:
        raise RuntimeOperationError(f"cannot create a container of {run.image}: {exc.explanation or exc}") from exc
    except docker.errors.DockerException as exc:
        raise EngineUnavailableError(f"Docker engine failed: {exc}") from exc
    try:
        container.start()
        for chunk in container.logs(stream=True, follow=True):
            write(chunk)
        return int(container.wait().get("StatusCode", 1))
    except docker.errors.APIError as exc:
        raise RuntimeOperationError(f"running a container of {run.image} failed: {exc.explanation or exc}") from exc
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)
