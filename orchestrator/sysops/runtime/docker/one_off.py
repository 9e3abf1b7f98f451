"""Run a one-off command in a container of an image to its end (`sysops plugin test` runs a plugin's tests so).

The container is hardened and limited like a plugin instance (read-only root, a small /tmp, no network, no
capabilities, no new privileges, the plugin's own uid, its manifest's CPU, memory (no swap beyond it) and
process limits), gets only read-only bind mounts, and is removed afterwards whatever happened, Ctrl-C
included; a run longer than its timeout is killed and reported as DeadlineExceededError. Its output is handed
to the caller's `write` as it comes (the caller decides how plugin-controlled bytes reach a terminal); the
answer is the command's exit code.

A signal that ends the caller (SIGTERM, SIGHUP) would skip that removal, and SIGKILL always does: so the
container is named `sysops-one-off-PID-...` and labelled `sysops.one-off=PID` with the caller's pid, and
`remove_stale_one_offs` (run before each new one) removes those whose creating process is gone.
`remove_image_unless_used` removes an image a one-off run built for itself unless a container uses it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import docker
import docker.errors
from docker.types import Mount

from sysops.errors import DeadlineExceededError, EngineUnavailableError, RuntimeOperationError
from sysops.processes import process_alive
from sysops.runtime.base import ResourceLimits
from sysops.runtime.docker.cpu_quota import cfs_settings

#: Label of a one-off container: the pid of the process that created it (and removes it when it ends).
LABEL_ONE_OFF = "sysops.one-off"

_TMPFS = {"/tmp": "rw,nosuid,nodev,size=64m"}


@dataclass(frozen=True)
class OneOffRun:
    """What to run: the image, the command, as which uid, within which limits (an instance's, `limits_for`),
    read-only mounts (host path -> container path), environment, and for how long at most."""

    image: str
    command: list[str]
    uid: int
    limits: ResourceLimits
    timeout_s: float
    read_only_mounts: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    #: What the run is, for messages ("hello's tests").
    what: str = "the command"


def run_to_end(client: docker.DockerClient, run: OneOffRun, write: Callable[[bytes], None]) -> int:
    """Run `run` to its end, handing its output to `write`; its exit code. The container is always removed."""
    mounts = [Mount(target, source, type="bind", read_only=True) for source, target in run.read_only_mounts.items()]
    owner = str(os.getpid())
    cpu = cfs_settings(run.limits.nano_cpus)
    try:
        container = client.containers.create(
            run.image,
            name=f"sysops-one-off-{owner}-{secrets.token_hex(4)}",
            command=run.command,
            entrypoint=run.entrypoint or None,
            user=f"{run.uid}:{run.uid}",
            environment=run.environment,
            labels={**run.labels, LABEL_ONE_OFF: owner},
            mounts=mounts,
            network_mode="none",
            read_only=True,
            tmpfs=_TMPFS,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            cpu_period=cpu.period,
            cpu_quota=cpu.quota,
            mem_limit=run.limits.memory_bytes,
            memswap_limit=run.limits.memory_bytes,
            pids_limit=run.limits.pids,
        )
    except docker.errors.APIError as exc:
        raise RuntimeOperationError(f"cannot create a container of {run.image}: {exc.explanation or exc}") from exc
    except docker.errors.DockerException as exc:
        raise EngineUnavailableError(f"Docker engine failed: {exc}") from exc
    expired = threading.Event()

    def expire() -> None:  # end a run past its time: its output stream and wait end with it
        expired.set()
        with contextlib.suppress(docker.errors.DockerException):
            container.kill()

    timer = threading.Timer(run.timeout_s, expire)
    timer.daemon = True
    try:
        container.start()
        timer.start()
        for chunk in container.logs(stream=True, follow=True):
            write(chunk)
        code = int(container.wait().get("StatusCode", 1))
        if expired.is_set():
            raise DeadlineExceededError(
                f"{run.what}: still running after {run.timeout_s:g} s; stopped and removed",
                hint="give it more time with --timeout SECONDS",
            )
        return code
    except docker.errors.APIError as exc:
        raise RuntimeOperationError(f"running a container of {run.image} failed: {exc.explanation or exc}") from exc
    finally:
        timer.cancel()
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


def remove_image_unless_used(client: docker.DockerClient, reference: str) -> None:
    """Untag `reference` and remove its image if nothing else needs it: not forced, so the engine keeps an
    image a container (an instance) uses or another tag names."""
    with contextlib.suppress(docker.errors.DockerException):
        client.images.remove(reference, noprune=False)
