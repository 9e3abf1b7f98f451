"""Per-pod tokens on Kubernetes (runtime/kubernetes/pod_tokens.py, driver.start/remove/_status): the token is
derived from the pod's name with the key file, reaches the pod only through its Secret, and the Secret and the
NetworkPolicy are created before the pod. The API is a recording stand-in (the e2e test runs it on a cluster).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from sysops.errors import RuntimeOperationError
from sysops.runtime.base import LABEL_INSTALLATION, LABEL_INSTANCE, LABEL_PLUGIN, InstanceSpec, ResourceLimits
from sysops.runtime.kubernetes import pod_tokens
from sysops.runtime.kubernetes.driver import KubernetesDriver

KEY = b"k" * 40
POD = "sysops-abc-demo-0123456789"


class RecordingApi:
    """CoreV1Api and NetworkingV1Api in one: records creations and deletions in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.pods: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, Any]] = {}

    def create_namespaced_secret(self, namespace: str, body: dict[str, Any]) -> None:
        self.calls.append(("create secret", body["metadata"]["name"]))
        self.secret = body
        self.secrets[body["metadata"]["name"]] = body

    def create_namespaced_network_policy(self, namespace: str, body: dict[str, Any]) -> None:
        self.calls.append(("create networkpolicy", body["metadata"]["name"]))
        self.policies[body["metadata"]["name"]] = body

    def create_namespaced_pod(self, namespace: str, body: dict[str, Any]) -> None:
        self.calls.append(("create pod", body["metadata"]["name"]))
        self.pods[body["metadata"]["name"]] = body

    def read_namespaced_pod(self, name: str, namespace: str) -> Any:
        return _pod_object(self.pods[name])

    def delete_namespaced_pod(self, name: str, namespace: str, grace_period_seconds: int) -> None:
        self.calls.append(("delete pod", name))

    def read_namespaced_network_policy(self, name: str, namespace: str) -> Any:
        if name not in self.policies:
            raise ApiException(status=404, reason="Not Found")
        metadata = self.policies[name]["metadata"]
        return SimpleNamespace(metadata=SimpleNamespace(labels=metadata.get("labels"), uid=f"uid-{name}"))

    def delete_namespaced_network_policy(self, name: str, namespace: str, body: Any) -> None:
        self.calls.append(("delete networkpolicy", name))
        assert body.preconditions.uid == f"uid-{name}", "the delete names the uid of the policy checked"
        del self.policies[name]

    def delete_collection_namespaced_secret(
        self, namespace: str, field_selector: str, label_selector: str, _preload_content: bool
    ) -> Any:
        """Deletes the Secrets matching both selectors, as the API server does (name=, and label existence)."""
        name = field_selector.removeprefix("metadata.name=")
        labels = self.secrets.get(name, {}).get("metadata", {}).get("labels", {})
        if name in self.secrets and all(labels.get(key) for key in label_selector.split(",")):
            self.calls.append(("delete secret", name))
            del self.secrets[name]
        return SimpleNamespace(release_conn=lambda: None)


def _pod_object(body: dict[str, Any]) -> Any:
    """The API's answer for a created pod body: running, with an IP."""
    env = [SimpleNamespace(name=item["name"], value=item.get("value")) for item in body["spec"]["containers"][0]["env"]]
    running = SimpleNamespace(running=object(), terminated=None)
    return SimpleNamespace(
        metadata=SimpleNamespace(
            name=body["metadata"]["name"], labels=body["metadata"]["labels"], annotations={}, deletion_timestamp=None
        ),
        spec=SimpleNamespace(containers=[SimpleNamespace(env=env, image="img")]),
        status=SimpleNamespace(
            phase="Running",
            pod_ip="10.1.2.3",
            start_time=None,
            conditions=[],
            container_statuses=[SimpleNamespace(state=running, last_state=None, restart_count=0, image_id="")],
        ),
    )


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "token-key"
    path.write_bytes(KEY + b"\n")
    monkeypatch.setenv(pod_tokens.KEY_FILE_ENV, str(path))
    monkeypatch.delenv("SYSOPS_TLS_CA", raising=False)
    return path


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> RecordingApi:
    recording = RecordingApi()
    monkeypatch.setattr(KubernetesDriver, "core", property(lambda self: recording))
    monkeypatch.setattr(KubernetesDriver, "networking", property(lambda self: recording))
    monkeypatch.setattr(KubernetesDriver, "ensure_owner", lambda self, plugin: {"metadata": {"name": plugin}})
    monkeypatch.setattr(KubernetesDriver, "_owner_reference", staticmethod(lambda owner: {"kind": "Plugin"}))
    return recording


def _spec() -> InstanceSpec:
    return InstanceSpec(
        name=POD,
        image="img",
        labels={LABEL_INSTALLATION: "inst", LABEL_PLUGIN: "demo", LABEL_INSTANCE: "0123456789"},
        environment={"SYSOPS_INSTANCE": "0123456789"},
        socket_dir=Path("/nonexistent"),
        data_volume="v",
        limits=ResourceLimits(nano_cpus=100_000_000, memory_bytes=64 << 20, pids=64),
        token="random-token-of-the-rollout",
    )


def test_the_token_is_the_hmac_of_the_pod_name_with_the_key_file(key_file: Path) -> None:
    expected = hmac.new(KEY, POD.encode(), hashlib.sha256).hexdigest()
    assert pod_tokens.pod_token(pod_tokens.token_key(), POD) == expected
    assert pod_tokens.pod_token(KEY, POD + "x") != expected


def test_without_a_key_file_the_key_comes_from_the_server_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pod_tokens.KEY_FILE_ENV, raising=False)
    monkeypatch.setenv("SYSOPS_SERVER_TOKEN", "s" * 32)
    first = pod_tokens.token_key()
    assert first != b"s" * 32 and len(first) == 32
    assert pod_tokens.token_key() == first
    monkeypatch.delenv("SYSOPS_SERVER_TOKEN")
    with pytest.raises(RuntimeOperationError, match="no key for plugin pod tokens: set SYSOPS_TOKEN_KEY_FILE"):
        pod_tokens.token_key()


def test_a_short_or_missing_key_file_is_refused_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"tiny")
    monkeypatch.setenv(pod_tokens.KEY_FILE_ENV, str(short))
    with pytest.raises(RuntimeOperationError, match=f"pod token key {short} .* has 4 bytes"):
        pod_tokens.token_key()
    monkeypatch.setenv(pod_tokens.KEY_FILE_ENV, str(tmp_path / "absent"))
    with pytest.raises(RuntimeOperationError, match="cannot read the pod token key"):
        pod_tokens.token_key()


@pytest.mark.parametrize(
    "key", [b"\n" + b"\x01" * 31, b" " + bytes(range(0x80, 0x9E)) + b"\t\n"], ids=["leading-newline", "both-ends"]
)
def test_a_binary_key_that_stripping_would_make_too_short_is_taken_whole(
    key: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "binary"  # os.urandom(32) starts or ends with a whitespace byte about one time in 20
    path.write_bytes(key)
    monkeypatch.setenv(pod_tokens.KEY_FILE_ENV, str(path))
    assert pod_tokens.token_key() == key


def test_a_key_long_enough_without_its_surrounding_whitespace_keeps_the_value_it_had(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys accepted before keep their value, so an upgrade changes no pod's token: `openssl rand -base64 64`
    (a newline inside), a UTF-8 passphrase, a 64-byte binary key ending in a newline."""
    contents = (b"A" * 64 + b"\nBBBB\n", "pässphrase ".encode() * 4 + b"\n", bytes(range(0x80, 0xBF)) + b"\n")
    for number, content in enumerate(contents):
        path = tmp_path / f"key{number}"  # token_key() is cached per file name
        path.write_bytes(content)
        monkeypatch.setenv(pod_tokens.KEY_FILE_ENV, str(path))
        assert pod_tokens.token_key() == content.strip()


def test_a_text_key_is_taken_without_its_surrounding_whitespace(key_file: Path) -> None:
    assert pod_tokens.token_key() == KEY  # the file holds KEY and a newline, as `openssl rand -hex 32 > file` writes


def test_the_secret_and_the_policy_exist_before_the_pod(key_file: Path, api: RecordingApi) -> None:
    KubernetesDriver(namespace="unit").start(_spec())
    assert api.calls == [
        ("create secret", f"{POD}-token"),
        ("create networkpolicy", POD),
        ("create pod", POD),
    ]


def test_the_pod_spec_carries_no_token_only_a_reference_to_its_secret(key_file: Path, api: RecordingApi) -> None:
    status = KubernetesDriver(namespace="unit").start(_spec())
    expected = pod_tokens.pod_token(KEY, POD)
    env = api.pods[POD]["spec"]["containers"][0]["env"]
    assert expected not in str(api.pods[POD]) and "random-token-of-the-rollout" not in str(api.pods[POD])
    [token] = [item for item in env if item["name"] == "SYSOPS_TOKEN"]
    assert token == {"name": "SYSOPS_TOKEN", "valueFrom": {"secretKeyRef": {"name": f"{POD}-token", "key": "token"}}}
    assert base64.b64decode(api.secret["data"]["token"]).decode() == expected
    assert api.secret["metadata"]["ownerReferences"] == [{"kind": "Plugin"}]
    assert "ca.crt" not in api.secret["data"], "no TLS: no CA"
    assert status.token == expected, "the rollout records the pod's token (a re-adopting server derives the same)"


def test_with_tls_the_secret_carries_the_ca_and_the_pod_its_server_name(
    key_file: Path, api: RecordingApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ca.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("SYSOPS_TLS_CA", str(tmp_path / "ca.crt"))
    monkeypatch.setenv("SYSOPS_HOST_SERVER_NAME", "rel-sysops.ns.svc")
    KubernetesDriver(namespace="unit").start(_spec())
    assert base64.b64decode(api.secret["data"]["ca.crt"]).startswith(b"-----BEGIN CERTIFICATE-----")
    env = {item["name"]: item for item in api.pods[POD]["spec"]["containers"][0]["env"]}
    assert env["SYSOPS_HOST_CA"]["valueFrom"]["secretKeyRef"] == {"name": f"{POD}-token", "key": "ca.crt"}
    assert env["SYSOPS_HOST_SERVER_NAME"]["value"] == "rel-sysops.ns.svc"
    assert env["SYSOPS_HOST_TLS"]["value"] == "required", "the SDK must not fall back to plaintext"


def test_a_listed_pod_has_its_derived_token_never_a_plain_one_from_its_spec(key_file: Path, api: RecordingApi) -> None:
    """A pod someone made with the plugin's labels and a plain SYSOPS_TOKEN of their choosing is not trusted
    with that token: the server would send it to the pod and accept it from the pod's host calls."""
    driver = KubernetesDriver(namespace="unit")
    driver.start(_spec())
    assert driver._status(api.read_namespaced_pod(POD, "unit")).token == pod_tokens.pod_token(KEY, POD)
    forged = api.read_namespaced_pod(POD, "unit")
    forged.spec.containers[0].env = [SimpleNamespace(name="SYSOPS_TOKEN", value="chosen-by-the-pod")]
    assert driver._status(forged).token == pod_tokens.pod_token(KEY, POD)


def test_remove_deletes_the_token_secret_with_the_pod(key_file: Path, api: RecordingApi) -> None:
    driver = KubernetesDriver(namespace="unit")
    driver.start(_spec())
    api.calls.clear()
    driver.remove(POD)
    assert api.calls == [("delete pod", POD), ("delete networkpolicy", POD), ("delete secret", f"{POD}-token")]
    assert not api.policies and not api.secrets


def test_remove_leaves_a_policy_and_a_secret_sysops_did_not_make(
    key_file: Path, api: RecordingApi, caplog: pytest.LogCaptureFixture
) -> None:
    """A labelled pod named `default-deny` (or `github`) that the server does not know is removed by
    reconciliation: the user's NetworkPolicy `default-deny` and Secret `github-token` stay."""
    api.policies["default-deny"] = {"metadata": {"name": "default-deny", "labels": {"team": "a"}}}
    api.secrets["default-deny-token"] = {"metadata": {"name": "default-deny-token", "labels": {}}}
    api.secrets["github-token"] = {"metadata": {"name": "github-token", "labels": {LABEL_INSTANCE: "forged"}}}
    driver = KubernetesDriver(namespace="unit")
    driver.remove("default-deny")
    driver.remove("github")
    assert api.calls == [("delete pod", "default-deny"), ("delete pod", "github")]
    assert set(api.policies) == {"default-deny"}
    assert set(api.secrets) == {"default-deny-token", "github-token"}
    assert "left NetworkPolicy default-deny in place" in caplog.text
