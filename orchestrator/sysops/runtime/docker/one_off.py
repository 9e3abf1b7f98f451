"""Run a one-off command in a container of an image to its end (`sysops plugin test` runs a plugin's tests so).

The container is hardened like a plugin instance (read-only root, a small /tmp, no network, no capabilities,
no new privileges, the plugin's non-root user), gets only read-only bind mounts, and is removed afterwards
whatever happened, Ctrl-C included. Its output is handed to the caller's `write` as it comes (the caller
decides how plugin-controlled bytes reach a terminal); the answer is the command's exit code.

A signal that ends the caller (SIGTERM, SIGHUP) would skip that removal, and SIGKILL always does: so the
container is named `sysops-one-off-PID-...` and labelled `sysops.one-off=PID` with the caller's pid, and
`remove_stale_one_offs` (run before each new one) removes those whose creating process is gone.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import docker
import docker.errors
from docker.types import Mount

from sysops.errors import EngineUnavailableError, RuntimeOperationError
from sysops.processes import process_alive

#: Label of a one-off container: the pid of the process that created it (and removes it when it ends).
LABEL_ONE_OFF = "sysops.one-off"

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
    owner = str(os.getpid())
    try:
        container = client.containers.create(
            run.image,
            name=f"sysops-one-off-{owner}-{secrets.token_hex(4)}",
            command=run.command,
            entrypoint=run.entrypoint or None,
            user=run.user,
            environment=run.environment,
            labels={**run.labels, LABEL_ONE_OFF: owner},
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


def remove_stale_one_offs(client: docker.DockerClient, labels: Mapping[str, str]) -> int:
    """Remove the one-off containers (with `labels`) whose creating process is gone; how many were removed."""
    filters: dict[str, str | list[str] | bool] = {
        "label": [LABEL_ONE_OFF, *(f"{key}={value}" for key, value in labels.items())]
    }
    removed = 0
    try:
        for container in client.containers.list(all=True, filters=filters):
            owner = container.labels.get(LABEL_ONE_OFF, "")
            if owner.isdigit() and process_alive(int(owner)):
                continue
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
                removed += 1
    except docker.errors.APIError as exc:
        raise RuntimeOperationError(f"cannot remove stale one-off containers: {exc.explanation or exc}") from exc
    except docker.errors.DockerException as exc:
        raise EngineUnavailableError(f"Docker engine failed: {exc}") from exc
    return removed
