"""`sysops serve` on Kubernetes: name the fault of a pod that broke a routed call, as the engine does on Docker.

The router (core/router.py) asks this reader when a call to a pod failed after it started: the Kubernetes
driver waits a few seconds for the kubelet to report the container's end and names it (crash, OOMKilled,
unresponsive: runtime/kubernetes/pod_faults.py). The fault also goes to the Plugin object's status
(`lastFault`) through the mirror's `write_status`, so `kubectl get plugin X -o yaml` says it too.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

from sysops.core.router import RemoteFaultReader

LOG = logging.getLogger(__name__)


@runtime_checkable
class DescribesFailures(Protocol):
    """A driver that names why an instance at an endpoint broke a call (the Kubernetes driver)."""

    def describe_failure(self, endpoint: str, since: float, wait: float = 5.0) -> str:
        """The fault, or "" when the instance did not end since `since`."""
        ...


def pod_fault_reader(driver: DescribesFailures, mirror: Any) -> RemoteFaultReader:
    """The router's reader of pod faults, writing each fault it names to the Plugin object's status too."""

    def read(plugin: str, endpoint: str, since: float) -> str:
        fault = driver.describe_failure(endpoint, since)
        write_status = getattr(mirror, "write_status", None)
        if fault and write_status is not None:
            try:
                write_status(plugin, last_fault=fault)
            except Exception as exc:  # the call's error names the fault whatever the API server says
                LOG.warning("cannot write the fault of %s to its Plugin object: %s", plugin, exc)
        return fault

    return read
