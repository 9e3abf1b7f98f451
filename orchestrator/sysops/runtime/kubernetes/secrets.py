"""Reading one key of a Kubernetes Secret for the host's `secrets` service (an integration plugin's secret).

Lives beside the driver because only the Kubernetes driver package may import the kubernetes client. The
server reads the Secret in its own namespace (SYSOPS_NAMESPACE) with its service account; the chart's Role
allows `get` only on the Secrets the values name (`secrets.names`), so a policy naming another is refused
by the API server, whatever the policy says.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sysops.errors import RuntimeOperationError
from sysops.runtime.kubernetes.driver import load_client_config


def read_secret_key(name: str, key: str, namespace: str | None = None) -> bytes:
    """The bytes under `key` of Secret `name` (RuntimeOperationError naming what failed, never the value)."""
    load_client_config()
    namespace = namespace or os.environ.get("SYSOPS_NAMESPACE", "default")
    try:
        secret: Any = client.CoreV1Api().read_namespaced_secret(name, namespace)
    except ApiException as exc:
        raise RuntimeOperationError(
            f"cannot read Secret {name} in namespace {namespace}: {exc.status} {exc.reason}".strip()
        ) from None
    data = dict(secret.data or {})
    if key not in data:
        raise RuntimeOperationError(f"Secret {name} in namespace {namespace} has no key {key!r}")
    try:
        return base64.b64decode(data[key] or "", validate=True)
    except (binascii.Error, ValueError):
        raise RuntimeOperationError(f"key {key!r} of Secret {name} is not base64 as the API serves it") from None
