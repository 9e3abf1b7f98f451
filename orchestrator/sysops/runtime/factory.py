"""The one place that builds runtime drivers, so the CLI, the host and the server never disagree on how.

The Docker and Kubernetes clients are imported here lazily: only the runtime that is asked for is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sysops.errors import EngineUnavailableError, UsageError
from sysops.runtime.base import RuntimeDriver, StateMirror

if TYPE_CHECKING:
    from sysops.runtime.docker.driver import DockerDriver

RUNTIMES = ("docker", "kubernetes")


def make_driver(runtime: str = "docker") -> tuple[RuntimeDriver, StateMirror | None]:
    """The driver of `runtime` and, where the runtime keeps desired state itself, its state mirror."""
    if runtime == "kubernetes":
        try:
            from sysops.runtime.kubernetes.driver import KubernetesDriver
            from sysops.runtime.kubernetes.plugin_resource import PluginResourceMirror
        except ImportError as exc:
            raise EngineUnavailableError(
                "the kubernetes runtime needs the kubernetes client", hint="pip install 'sysops[kubernetes]'"
            ) from exc
        kubernetes = KubernetesDriver()
        return kubernetes, PluginResourceMirror(kubernetes.namespace)
    if runtime == "docker":
        return docker_driver(), None
    raise UsageError(f"unknown runtime {runtime!r}", hint=f"use one of: {', '.join(RUNTIMES)}")


def docker_driver() -> DockerDriver:
    """The local engine's driver (builds, pushes and local plugins)."""
    from sysops.runtime.docker.driver import DockerDriver

    return DockerDriver()
