"""The Kubernetes runtime driver: plugin instances as pods that sysops manages, in one namespace.

Each instance is a Pod (not a Deployment: sysops itself does the rolling replacement and the automatic
rollback that Deployments lack), owned by the plugin's Plugin object (plugin_resource.py), with a NetworkPolicy
from the manifest's `network:`. Pods listen on TCP and require a per-pod token derived from the pod's name
(pod_tokens.py), which reaches the pod only through its Secret `<pod>-token` (with the server's CA when the
server speaks TLS); the Secret and the NetworkPolicy exist before the pod is created. The plugin's
limits become resource requests and limits (Guaranteed QoS) and its hardening a restricted security context.
This module translates the pod, NetworkPolicy and Secret API's errors into sysops errors; the other modules
that import the kubernetes client each own one kind of object (runtime/kubernetes/: plugin_resource.py
Plugin objects, informer.py watches, node_limits.py the node agent's read-back, migration.py old ConfigMaps,
secrets.py host secrets; server/leader.py and server/plugin_controller.py; nodeagent/).
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import math
import os
import re
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.utils import parse_quantity

from sysops.errors import BuildError, EngineUnavailableError, RuntimeOperationError, StartFailedError
from sysops.nodeagent.annotations import LIMITS_ANNOTATION, NodeLimits
from sysops.runtime.base import (
    LABEL_INSTALLATION,
    LABEL_INSTANCE,
    LABEL_PLUGIN,
    BuildRequest,
    BuiltImage,
    InstanceSpec,
    InstanceStatus,
    LivenessCheck,
    ProgressCallback,
    ResourceLimits,
    ResourceReport,
    StreamCancel,
)
from sysops.runtime.faults import describe_fault, engine_timestamp
from sysops.runtime.kubernetes.node_limits import (
    await_node_limits,
    gate_on_node_agent,
    node_agent_report,
    wanted_node_limits,
)
from sysops.runtime.kubernetes.plugin_resource import PluginApi, plugin_owner_reference
from sysops.runtime.kubernetes.pod_faults import ended_since, last_termination
from sysops.runtime.kubernetes.pod_tokens import pod_token, token_key, token_secret_name
from sysops.runtime.kubernetes.pod_usage import pod_usage
from sysops.safe_text import for_terminal

PLUGIN_PORT = 50051
ORCHESTRATOR_SELECTOR = {"app.kubernetes.io/name": "sysops"}
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_POD_IP_TIMEOUT = 60.0
#: Ephemeral storage of a plugin pod besides its /data: container logs and the writable layer.
EPHEMERAL_STORAGE_BASE_BYTES = 64 << 20
#: Seconds the kubelet allows an exec probe beyond its gRPC deadline (the interpreter starting).
EXEC_STARTUP_SECONDS = 2
#: The server's CA certificate (PEM file): when set, plugin pods get it (their token Secret's `ca.crt`) and
#: call host services over TLS, checking the server's certificate for SYSOPS_HOST_SERVER_NAME.
HOST_CA_ENV = "SYSOPS_TLS_CA"
HOST_SERVER_NAME_ENV = "SYSOPS_HOST_SERVER_NAME"
#: Set to "required" on plugin pods when the server speaks TLS (sysops_sdk/_host_client.py).
HOST_TLS_ENV = "SYSOPS_HOST_TLS"
TOKEN_ENV = "SYSOPS_TOKEN"

_log = logging.getLogger(__name__)


def _short(exc: ApiException) -> str:
    return f"{exc.status} {exc.reason}".strip()


def scheduling_problem(pod: Any) -> str:
    """`: <message>` of a pod's PodScheduled condition when it is False (the scheduler's `0/1 nodes are
    available: 1 Insufficient cpu.`), else ''."""
    for condition in (pod.status.conditions if pod.status else None) or []:
        if condition.type == "PodScheduled" and condition.status == "False":
            reason = str(condition.message or condition.reason or "").strip()
            return f": {for_terminal(reason)}" if reason else ""
    return ""


def load_client_config() -> None:
    """Use the in-cluster service account when running in a pod, else the user's kubeconfig."""
    try:
        config.load_incluster_config()
    except ConfigException:
        try:
            config.load_kube_config()
        except (ConfigException, OSError) as exc:
            raise EngineUnavailableError(
                f"Kubernetes API not reachable ({exc})", hint="set KUBECONFIG or run inside a cluster"
            ) from exc


def cpu_quantity(nano_cpus: int) -> str:
    """CPU in millicores, as Kubernetes writes it."""
    return f"{max(1, nano_cpus // 1_000_000)}m"


def memory_quantity(memory_bytes: int) -> str:
    """Memory in MiB, as Kubernetes writes it."""
    return f"{memory_bytes // (1024 * 1024)}Mi"


def data_bytes(limits: ResourceLimits) -> int:
    """Size of the plugin's /data emptyDir: the manifest's `data_mb` (rollouts always set it; 256 MiB otherwise)."""
    return limits.data_bytes or 256 << 20


def liveness_probe(liveness: LivenessCheck) -> dict[str, Any]:
    """The pod's livenessProbe from the manifest's `liveness:`: the kubelet restarts the container after
    `failures` probes in a row found no SERVING answer within `timeout_s` (the same rule `sysops serve`
    applies to Docker instances). The exec probe starts an interpreter, so the kubelet allows it
    EXEC_STARTUP_SECONDS on top of the gRPC deadline; the first probe waits out the readiness timeout."""
    return {
        "exec": {
            "command": [
                "/opt/sysops/bin/python",
                "-m",
                "sysops_sdk.healthcheck",
                f"127.0.0.1:{PLUGIN_PORT}",
                f"{liveness.timeout_s:g}",
            ]
        },
        "periodSeconds": max(1, math.ceil(liveness.interval_s)),
        "timeoutSeconds": math.ceil(liveness.timeout_s) + EXEC_STARTUP_SECONDS,
        "failureThreshold": liveness.failures,
        "initialDelaySeconds": math.ceil(liveness.start_s),
    }


def quantities_equal(asked: str | None, applied: str | None) -> bool:
    """Whether two resource quantities are the same amount (`1000m` and `1`, `1024Mi` and `1Gi` are).

    The API server stores quantities in canonical form, so they cannot be compared as strings; a
    missing or unparseable quantity equals nothing.
    """
    if not asked or not applied:
        return False
    try:
        left: Decimal = parse_quantity(asked)
        right: Decimal = parse_quantity(applied)
    except ValueError:
        return False
    return left == right


#: The server pods' gRPC port (the chart's `server.port`), which plugin pods may reach for host services.
SERVER_PORT_ENV = "SYSOPS_SERVER_PORT"
DEFAULT_SERVER_PORT = 7443


def server_port() -> int:
    """The server pods' gRPC port that plugin pods' NetworkPolicy lets them reach (SYSOPS_SERVER_PORT)."""
    raw = os.environ.get(SERVER_PORT_ENV, "").strip()
    return int(raw) if raw.isdecimal() and 0 < int(raw) < 65536 else DEFAULT_SERVER_PORT


def service_endpoint(name: str, namespace: str | None = None) -> str:
    """`CLUSTER_IP:PORT` of the Service `name` (its port named grpc, else its first); RuntimeOperationError
    when it cannot be read. Plugin pods reach the server's Host service there (no cluster DNS needed)."""
    load_client_config()
    namespace = namespace or os.environ.get("SYSOPS_NAMESPACE", "default")
    try:
        service: Any = client.CoreV1Api().read_namespaced_service(name, namespace)
    except ApiException as exc:
        raise RuntimeOperationError(f"cannot read Service {name} in {namespace}: {_short(exc)}") from exc
    ports = list(service.spec.ports or []) if service.spec else []
    port = next((p for p in ports if p.name == "grpc"), ports[0] if ports else None)
    cluster_ip = str(service.spec.cluster_ip or "") if service.spec else ""
    if port is None or cluster_ip in ("", "None"):
        raise RuntimeOperationError(f"Service {name} in {namespace} has no cluster IP and port")
    return f"{cluster_ip}:{port.port}"


class KubernetesDriver:
    """Runs plugin instances as pods in one namespace."""

    name = "kubernetes"
    #: The kubelet restarts a pod's stopped container itself (restartPolicy Always).
    restarts_stopped_instances = False
    #: A deleted or drained plugin pod is not re-created by any controller: reconciliation starts another.
    replaces_lost_instances = True

    def __init__(self, namespace: str | None = None, image_pull_policy: str | None = None) -> None:
        self.namespace = namespace or os.environ.get("SYSOPS_NAMESPACE", "default")
        self.image_pull_policy = image_pull_policy or os.environ.get("SYSOPS_PLUGIN_IMAGE_PULL_POLICY", "IfNotPresent")
        # The client's own annotations are looser than its behaviour (dict bodies are accepted): use Any.
        self._core: Any = None

    @property
    def core(self) -> Any:
        """The core API client, configured on first use."""
        if self._core is None:
            load_client_config()
            self._core = client.CoreV1Api()
        return self._core

    @property
    def networking(self) -> Any:
        """The networking API (NetworkPolicies)."""
        _ = self.core
        return client.NetworkingV1Api()

    def ping(self) -> None:
        """Raise EngineUnavailableError if the API server cannot be reached."""
        try:
            self.core.list_namespaced_pod(self.namespace, limit=1)
        except ApiException as exc:
            raise EngineUnavailableError(
                f"Kubernetes API refused access to namespace {self.namespace}: {_short(exc)}"
            ) from exc
        except Exception as exc:  # urllib3 connection errors
            raise EngineUnavailableError(f"Kubernetes API not reachable ({type(exc).__name__})") from exc

    def image_id(self, reference: str) -> str | None:
        """Images live in registries or on nodes; the cluster is trusted to resolve the reference."""
        return reference or None

    def image_labels(self, reference: str) -> dict[str, str] | None:
        """Not readable here (the image is in a registry or on nodes): the CLI checks the image it built."""
        return None

    def build_image(self, request: BuildRequest, progress: ProgressCallback) -> BuiltImage:
        """The cluster does not build: the CLI builds with its local engine and pushes or shares the image."""
        raise BuildError("the kubernetes runtime does not build images", hint="the sysops CLI builds them locally")

    def remove_image(self, reference: str) -> None:
        """Images on nodes are garbage-collected by the kubelet."""

    def remove_volume(self, name: str) -> None:
        """Plugin data lives in pod-scoped volumes on this runtime."""

    def maintain(self, labels: Mapping[str, str]) -> None:
        """The kubelet restarts crashed pods with its own back-off, which resets after a stable run."""

    def remove_labelled(self, labels: Mapping[str, str]) -> int:
        """Delete the pods carrying `labels` (images and pod-scoped volumes are the kubelet's)."""
        pods = self.list_instances(labels)
        for pod in pods:
            self.remove(pod.handle)
        return len(pods)

    # owner
    def ensure_owner(self, plugin: str) -> dict[str, Any]:
        """Return the plugin's Plugin object, which owns its pods, policies and Secrets, creating an empty one
        if missing (the first roll's pods need their owner before the roll writes the spec)."""
        return PluginApi(self.namespace).ensure(plugin)

    @staticmethod
    def _owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
        return plugin_owner_reference(owner)

    # instances
    def start(self, spec: InstanceSpec) -> InstanceStatus:
        """Create the instance's pod and NetworkPolicy, and wait until the pod has an IP."""
        plugin = spec.labels.get(LABEL_PLUGIN, spec.name)
        if spec.code_dir is not None:
            raise RuntimeOperationError(
                f"plugin {plugin!r}: development mode (--dev) mounts code from the host's disk, which a pod cannot; "
                "run `sysops plugin up` without --dev"
            )
        limits = spec.limits
        node_limits = wanted_node_limits(plugin, limits)  # the node agent's limits; refused without the agent
        for allowance in spec.egress:
            try:
                ipaddress.ip_network(allowance.host, strict=False)
            except ValueError:
                raise RuntimeOperationError(
                    f"plugin {plugin!r}: network allow-list entry {allowance.host!r} is a host name; a NetworkPolicy "
                    "needs an IP address or CIDR on the kubernetes runtime"
                ) from None
        owner = self._owner_reference(self.ensure_owner(plugin))
        labels = {key: value for key, value in spec.labels.items() if _LABEL_VALUE.match(value) and len(value) <= 63}
        annotations = {key: value for key, value in spec.labels.items() if key not in labels}
        if node_limits is not None:
            annotations[LIMITS_ANNOTATION] = node_limits.to_json()
        environment = {**spec.environment, "SYSOPS_LISTEN": f"0.0.0.0:{PLUGIN_PORT}"}
        host_ca = _host_ca()
        server_name = os.environ.get(HOST_SERVER_NAME_ENV, "").strip()
        if host_ca:  # the SDK then refuses a host call without the CA rather than send the token in plaintext
            environment[HOST_TLS_ENV] = "required"
        if host_ca and server_name:
            environment[HOST_SERVER_NAME_ENV] = server_name
        secret = self._token_secret_body(spec.name, labels, owner, host_ca)
        token_secret = str(secret["metadata"]["name"])
        pod = self._pod_body(
            spec, labels, annotations, environment, owner, token_secret=token_secret, host_ca=bool(host_ca)
        )
        if node_limits is not None:  # unready (no calls) until the node agent says its limits hold
            gate_on_node_agent(pod)
        try:  # the token Secret and the NetworkPolicy first: the pod never runs without either
            self.core.create_namespaced_secret(self.namespace, secret)
            self.networking.create_namespaced_network_policy(self.namespace, self._policy_body(spec, labels, owner))
            self.core.create_namespaced_pod(self.namespace, pod)
        except ApiException as exc:
            self.remove(spec.name)
            raise RuntimeOperationError(f"cannot create pod {spec.name}: {_short(exc)}") from exc
        deadline = time.monotonic() + _POD_IP_TIMEOUT
        while time.monotonic() < deadline:
            status = self.inspect(spec.name)
            if status is None:
                break
            if status.endpoint or status.exit_code is not None:
                if node_limits is not None:  # not ready before the node agent read the limits back
                    self._await_node_limits(spec.name, node_limits)
                return status
            time.sleep(0.2)
        problem = self._scheduling_problem(spec.name)
        self.remove(spec.name)
        raise StartFailedError(f"pod {spec.name} was not scheduled within {_POD_IP_TIMEOUT:g}s{problem}")

    def _await_node_limits(self, handle: str, wanted: NodeLimits) -> None:
        """Wait for the node agent's read-back on the new pod; remove the pod when it does not come."""
        try:
            await_node_limits(self.core, self.namespace, handle, wanted)
        except StartFailedError:
            self.remove(handle)
            raise

    def _scheduling_problem(self, handle: str) -> str:
        """`: <the scheduler's reason>` when it has said why it cannot place the pod (e.g. not enough CPU on
        any node), else ''."""
        try:
            pod: Any = self.core.read_namespaced_pod(handle, self.namespace)
        except ApiException:
            return ""
        return scheduling_problem(pod)

    @staticmethod
    def _token_secret_body(
        pod: str, labels: Mapping[str, str], owner: Mapping[str, Any], host_ca: bytes
    ) -> dict[str, Any]:
        """The pod's Secret: its token (derived from its name, pod_tokens.py), and the server's CA if any."""
        data = {"token": base64.b64encode(pod_token(token_key(), pod).encode()).decode()}
        if host_ca:
            data["ca.crt"] = base64.b64encode(host_ca).decode()
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": token_secret_name(pod), "labels": dict(labels), "ownerReferences": [dict(owner)]},
            "data": data,
        }

    def _pod_body(
        self,
        spec: InstanceSpec,
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
        environment: Mapping[str, str],
        owner: Mapping[str, Any],
        *,
        token_secret: str = "",
        host_ca: bool = False,
    ) -> dict[str, Any]:
        """The pod: `environment` as plain values, plus SYSOPS_TOKEN (and SYSOPS_HOST_CA when `host_ca`) from
        the Secret `token_secret`, never as a value in the spec."""
        env: list[dict[str, Any]] = [
            {"name": key, "value": value} for key, value in sorted(environment.items()) if key != TOKEN_ENV
        ]
        if token_secret:
            from_secret = [(TOKEN_ENV, "token"), *([("SYSOPS_HOST_CA", "ca.crt")] if host_ca else [])]
            env += [
                {"name": name, "valueFrom": {"secretKeyRef": {"name": token_secret, "key": key}}}
                for name, key in from_secret
            ]
        resources = {
            "cpu": cpu_quantity(spec.limits.nano_cpus),
            "memory": memory_quantity(spec.limits.memory_bytes),
            # The /data emptyDir counts against the pod's ephemeral storage: without its size here the kubelet
            # would evict a plugin long before its /data is full.
            "ephemeral-storage": memory_quantity(data_bytes(spec.limits) + EPHEMERAL_STORAGE_BASE_BYTES),
        }
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": spec.name,
                "labels": dict(labels),
                "annotations": dict(annotations),
                "ownerReferences": [dict(owner)],
            },
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 10,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": spec.uid,
                    "runAsGroup": spec.uid,
                    "fsGroup": spec.uid,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "plugin",
                        "image": spec.image,
                        "imagePullPolicy": self.image_pull_policy,
                        "env": env,
                        "ports": [{"name": "grpc", "containerPort": PLUGIN_PORT}],
                        "resources": {"limits": resources, "requests": resources},
                        "securityContext": {
                            "readOnlyRootFilesystem": True,
                            "allowPrivilegeEscalation": False,
                            "privileged": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "readinessProbe": {
                            "exec": {"command": ["/opt/sysops/bin/python", "-m", "sysops_sdk.healthcheck"]},
                            "periodSeconds": 2,
                            "timeoutSeconds": 2,
                        },
                        "livenessProbe": liveness_probe(spec.liveness),
                        "volumeMounts": [
                            {"name": "tmp", "mountPath": "/tmp"},
                            {"name": "data", "mountPath": "/data"},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                    {"name": "data", "emptyDir": {"sizeLimit": memory_quantity(data_bytes(spec.limits))}},
                ],
            },
        }

    def _policy_body(self, spec: InstanceSpec, labels: Mapping[str, str], owner: Mapping[str, Any]) -> dict[str, Any]:
        egress = []
        for allowance in spec.egress:
            cidr = str(ipaddress.ip_network(allowance.host, strict=False))
            rule: dict[str, Any] = {"to": [{"ipBlock": {"cidr": cidr}}]}
            if allowance.ports:
                rule["ports"] = [{"protocol": "TCP", "port": port} for port in allowance.ports]
            egress.append(rule)
        # Host services (get_service, events): the server pods on their gRPC port, and nothing else of theirs.
        server = {"podSelector": {"matchLabels": ORCHESTRATOR_SELECTOR}}
        egress.append({"to": [server], "ports": [{"protocol": "TCP", "port": server_port()}]})
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": spec.name, "labels": dict(labels), "ownerReferences": [dict(owner)]},
            "spec": {
                "podSelector": {"matchLabels": {LABEL_INSTANCE: labels[LABEL_INSTANCE]}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": ORCHESTRATOR_SELECTOR}}],
                        "ports": [{"protocol": "TCP", "port": PLUGIN_PORT}],
                    }
                ],
                "egress": egress,
            },
        }

    def inspect(self, handle: str) -> InstanceStatus | None:
        """Return a pod's status, or None when it is gone."""
        try:
            pod: Any = self.core.read_namespaced_pod(handle, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise RuntimeOperationError(f"cannot read pod {handle}: {_short(exc)}") from exc
        return self._status(pod)

    def list_instances(self, labels: Mapping[str, str]) -> list[InstanceStatus]:
        """List pods carrying all `labels`."""
        selector = ",".join(f"{key}={value}" for key, value in labels.items())
        try:
            pods: list[Any] = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        except ApiException as exc:
            raise RuntimeOperationError(f"cannot list pods: {_short(exc)}") from exc
        return [self._status(pod) for pod in pods if pod.metadata.deletion_timestamp is None]

    @staticmethod
    def _status(pod: Any) -> InstanceStatus:
        metadata, status = pod.metadata, pod.status
        container_status = (status.container_statuses or [None])[0]
        running = bool(
            status.phase == "Running" and container_status is not None and container_status.state.running is not None
        )
        # The latest end of the container, also once the kubelet restarted it: an OOM kill stays flagged (as
        # the engine's OOMKilled does on Docker), a liveness kill says unresponsive (pod_faults.py).
        ended = last_termination(container_status)
        exit_code = ended.exit_code if ended is not None and not running else None
        # Always the derived token, never one from the pod's spec: anyone who may create pods could put a plain
        # SYSOPS_TOKEN of their choice there and, adopted, act as the plugin (pods from before token Secrets
        # must be rolled again, docs/security.md).
        return InstanceStatus(
            handle=metadata.name,
            name=metadata.name,
            labels={**(metadata.annotations or {}), **(metadata.labels or {})},
            running=running and metadata.deletion_timestamp is None,
            exit_code=exit_code,
            oom_killed=ended is not None and ended.oom_killed,
            error=ended.unresponsive if ended is not None else "",
            started_at=_engine_time(status.start_time),
            finished_at=_engine_time(ended.finished_at) if ended is not None else "",
            restart_count=int(container_status.restart_count) if container_status else 0,
            endpoint=f"{status.pod_ip}:{PLUGIN_PORT}" if status.pod_ip else "",
            token=pod_token(token_key(), metadata.name),
        )

    def logs(
        self, handle: str, *, tail: int | None = None, follow: bool = False, cancel: StreamCancel | None = None
    ) -> Iterator[str]:
        """Yield log lines of a pod: when its container was restarted, the previous run's lines come first (as
        the engine's logs of a container keep every run, so the reason of a crash is read as on Docker; the
        kubelet keeps one run back). `tail` counts both runs together, but when following: then each run gives
        its last `tail` lines.

        `cancel` shuts the follow's connection from another thread, which ends the iteration at once.
        """
        status = self.inspect(handle)
        if status is None:
            return
        if not status.restart_count or not status.running:  # one run, or the current one has not logged yet
            yield from self._run_logs(handle, tail, follow, previous=status.restart_count > 0, cancel=cancel)
            return
        earlier = list(self._run_logs(handle, tail, follow=False, previous=True, cancel=None))
        if follow or tail is None:
            yield from earlier
            yield from self._run_logs(handle, tail, follow, previous=False, cancel=cancel)
            return
        both = [*earlier, *self._run_logs(handle, tail, follow=False, previous=False, cancel=None)]
        yield from both[max(0, len(both) - tail) :]

    def _run_logs(
        self, handle: str, tail: int | None, follow: bool, *, previous: bool, cancel: StreamCancel | None
    ) -> Iterator[str]:
        """Yield log lines of one run of a pod's container: the current one, or the `previous` one."""
        try:
            response = self.core.read_namespaced_pod_log(
                handle, self.namespace, tail_lines=tail, follow=follow, previous=previous, _preload_content=False
            )
            if cancel is not None:
                cancel.attach(response.shutdown)
            pending = b""
            for chunk in response.stream(1024):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
            if pending:
                yield pending.decode(errors="replace")
        except ApiException as exc:
            if exc.status in (400, 404):  # container not started yet, or gone
                return
            raise RuntimeOperationError(f"cannot read logs of pod {handle}: {_short(exc)}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if cancel is not None and cancel.cancelled:
                return  # the connection was shut on purpose
            raise RuntimeOperationError(f"lost the logs of pod {handle} ({type(exc).__name__})") from exc

    def resources(self, handle: str, limits: ResourceLimits, *, sample_seconds: float = 0.0) -> ResourceReport:
        """Compare the pod's resource limits as the API server stored them with the manifest's, as amounts, and
        read its live usage (CPU over `sample_seconds`, or since the pod started when that is 0)."""
        try:
            pod: Any = self.core.read_namespaced_pod(handle, self.namespace)
        except ApiException as exc:
            raise RuntimeOperationError(f"cannot read pod {handle}: {_short(exc)}") from exc
        applied_limits = pod.spec.containers[0].resources.limits or {}
        data_volume = next((volume for volume in pod.spec.volumes or [] if volume.name == "data"), None)
        applied = {
            "cpu": applied_limits.get("cpu"),
            "memory": applied_limits.get("memory"),
            "data": data_volume.empty_dir.size_limit if data_volume and data_volume.empty_dir else None,
        }
        expected = {
            "cpu": cpu_quantity(limits.nano_cpus),
            "memory": memory_quantity(limits.memory_bytes),
            "data": memory_quantity(data_bytes(limits)),
        }
        mismatches = tuple(
            f"{key}: asked {expected[key]}, applied {applied[key]}"
            for key in expected
            if not quantities_equal(expected[key], applied[key])
        )
        agent_applied, agent_mismatches = node_agent_report(pod, limits)  # what the node agent read back
        applied.update(agent_applied)
        mismatches += tuple(agent_mismatches)
        return ResourceReport(applied=applied, usage=self._live_usage(pod, sample_seconds), mismatches=mismatches)

    def _live_usage(self, pod: Any, sample_seconds: float) -> dict[str, object]:
        """The pod's usage as its plugin's SDK reads its own cgroup (pod_usage.py); {} when it does not run."""
        if pod.status is None or pod.status.phase != "Running":
            return {}
        status = self._status(pod)
        if not status.running or not status.endpoint:
            return {}
        return pod_usage(status.endpoint, status.token, engine_timestamp(status.started_at), sample_seconds)

    def describe_failure(self, endpoint: str, since: float, wait: float = 5.0) -> str:
        """Why the pod serving `endpoint` (IP:port) broke a call begun at `since` (epoch seconds): e.g.
        "OOMKilled (memory limit 64 MiB, peak reached the 64 MiB limit), restarted 1 time", or "" when its
        container did not end since then. Waits up to `wait` seconds for the kubelet to report the end."""
        address = endpoint.rpartition(":")[0]
        deadline = time.monotonic() + wait
        while True:
            try:
                pods = self.core.list_namespaced_pod(
                    self.namespace, label_selector=LABEL_INSTANCE, field_selector=f"status.podIP={address}"
                ).items
            except (ApiException, urllib3.exceptions.HTTPError, OSError):
                return ""
            for pod in pods:
                if ended_since(last_termination((pod.status.container_statuses or [None])[0]), since):
                    limit = (pod.spec.containers[0].resources.limits or {}).get("memory")
                    return describe_fault(self._status(pod), int(parse_quantity(limit)) if limit else 0)
            if time.monotonic() > deadline:
                return ""
            time.sleep(0.25)

    def stop(self, handle: str, timeout: float) -> None:
        """Delete the pod with a grace period (SIGTERM, then SIGKILL)."""
        self._delete_pod(handle, max(1, round(timeout)))

    def restart(self, handle: str, timeout: float) -> None:
        """Refused: a pod's liveness is the kubelet's (its livenessProbe restarts the container in place)."""
        raise RuntimeOperationError(f"pod {handle} is restarted by the kubelet's livenessProbe, not by sysops")

    def remove(self, handle: str) -> None:
        """Delete the pod at once, and its NetworkPolicy and token Secret when sysops made them for it.

        Reconciliation also removes labelled pods the server does not know, whose names anyone who may create
        pods chooses: the policy `handle` and the Secret `<handle>-token` are deleted only when their labels
        say sysops made them (`made_by_sysops`), else left in place and logged. The policy is read and deleted
        with its uid as precondition; the Secret, which the server may not read (the Role grants no `get` on
        Secrets), by a delete-collection that the API server limits to that name and those labels.
        """
        self._delete_pod(handle, 0)
        self._delete_own_policy(handle)
        self._delete_own_token_secret(handle)

    def _delete_own_policy(self, handle: str) -> None:
        try:
            policy: Any = self.networking.read_namespaced_network_policy(handle, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise RuntimeOperationError(f"cannot read NetworkPolicy {handle}: {_short(exc)}") from exc
        if not made_by_sysops(policy.metadata.labels):
            _log.warning("left NetworkPolicy %s in place: its labels do not say sysops made it", handle)
            return
        only_this = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=policy.metadata.uid))
        try:
            self.networking.delete_namespaced_network_policy(handle, self.namespace, body=only_this)
        except ApiException as exc:
            if exc.status == 409:  # replaced since the read: no longer the one checked
                _log.warning("left NetworkPolicy %s in place: it was replaced while being removed", handle)
            elif exc.status != 404:
                raise RuntimeOperationError(f"cannot delete NetworkPolicy {handle}: {_short(exc)}") from exc

    def _delete_own_token_secret(self, handle: str) -> None:
        secret = token_secret_name(handle)
        try:
            self.core.delete_collection_namespaced_secret(
                self.namespace,
                field_selector=f"metadata.name={secret}",
                label_selector=SYSOPS_MADE_SELECTOR,
                _preload_content=False,  # the answer lists what was deleted: never parsed nor kept
            ).release_conn()
        except ApiException as exc:
            if exc.status != 404:
                raise RuntimeOperationError(f"cannot delete Secret {secret}: {_short(exc)}") from exc

    def _delete_pod(self, handle: str, grace: int) -> None:
        try:
            self.core.delete_namespaced_pod(handle, self.namespace, grace_period_seconds=grace)
        except ApiException as exc:
            if exc.status != 404:
                raise RuntimeOperationError(f"cannot delete pod {handle}: {_short(exc)}") from exc


#: The labels every object sysops makes for a pod carries (the pod's own labels, set by `start`).
SYSOPS_MADE_LABELS = (LABEL_INSTALLATION, LABEL_INSTANCE)
SYSOPS_MADE_SELECTOR = ",".join(SYSOPS_MADE_LABELS)


def made_by_sysops(labels: Mapping[str, str] | None) -> bool:
    """Whether an object's labels say sysops made it for a pod (it carries SYSOPS_MADE_LABELS)."""
    return all((labels or {}).get(key) for key in SYSOPS_MADE_LABELS)


def _host_ca() -> bytes:
    """The server's CA certificate that plugin pods verify it with (SYSOPS_TLS_CA), or b'' without TLS."""
    path = os.environ.get(HOST_CA_ENV, "").strip()
    if not path:
        return b""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or exc
        raise RuntimeOperationError(f"cannot read the server's CA {path} ({HOST_CA_ENV}): {reason}") from None


def _engine_time(moment: datetime | None) -> str:
    """A timestamp as the Docker engine writes it (2024-05-01T10:00:00.000000Z), which the core's
    `faults.engine_timestamp` reads; "" when unset. (str() of the client's datetime was not readable.)"""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if moment is not None else ""
