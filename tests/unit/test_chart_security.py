"""The chart's TLS and pod-token keys (templates/tls-secret.yaml, keys-secret.yaml, the deployment's mounts):
the generated certificate names the Service as the design says and is signed by the CA in the same Secret,
`tls.existingSecret` and `tls.enabled=false` replace or remove it, and the server always gets the keys file.
Needs helm (and openssl for the certificate checks); no cluster."""

# ruff: noqa: F811

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_chart import Render, _env, _one, helm, render  # noqa: F401  (fixtures)

FULLNAME = "sysops-test"  # the release name contains the chart name
NAMESPACE = "sysops-ns"


def _named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    found = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    return found[0] if found else None


def _server(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = _one(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_the_generated_certificate_names_the_service_and_its_ca_signs_it(render: Render, tmp_path: Path) -> None:
    secret = _named(render(), "Secret", f"{FULLNAME}-tls")
    assert secret is not None and secret["type"] == "kubernetes.io/tls"
    for key in ("tls.crt", "tls.key", "ca.crt"):
        (tmp_path / key).write_bytes(base64.b64decode(secret["data"][key]))
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", "ca.crt", "tls.crt"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    text = subprocess.run(
        ["openssl", "x509", "-in", "tls.crt", "-noout", "-ext", "subjectAltName"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    names = {part.strip() for part in text.splitlines()[-1].split(",")}
    assert names == {
        f"DNS:{FULLNAME}",
        f"DNS:{FULLNAME}.{NAMESPACE}",
        f"DNS:{FULLNAME}.{NAMESPACE}.svc",
        f"DNS:{FULLNAME}.{NAMESPACE}.svc.cluster.local",
        "DNS:localhost",
        "IP Address:127.0.0.1",
    }


def test_the_server_serves_tls_and_gives_plugins_the_ca_and_its_name(render: Render) -> None:
    pod, container = _server(render())
    env = _env(container)
    assert env["SYSOPS_TLS_CERT"]["value"] == "/etc/sysops-tls/tls.crt"
    assert env["SYSOPS_TLS_KEY"]["value"] == "/etc/sysops-tls/tls.key"
    assert env["SYSOPS_TLS_CA"]["value"] == "/etc/sysops-tls/ca.crt"
    assert env["SYSOPS_HOST_SERVER_NAME"]["value"] == f"{FULLNAME}.{NAMESPACE}.svc"
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    tls = volumes[mounts["/etc/sysops-tls"]["name"]]["secret"]
    assert tls == {"secretName": f"{FULLNAME}-tls", "defaultMode": 0o440}
    assert mounts["/etc/sysops-tls"]["readOnly"] is True


def test_an_existing_secret_replaces_the_generated_one(render: Render) -> None:
    objects = render("--set", "tls.existingSecret=corp-tls")
    assert _named(objects, "Secret", f"{FULLNAME}-tls") is None
    pod, _ = _server(objects)
    [tls] = [volume for volume in pod["volumes"] if volume["name"] == "tls"]
    assert tls["secret"]["secretName"] == "corp-tls"


def test_without_tls_no_secret_no_mount_no_tls_environment(render: Render) -> None:
    objects = render("--set", "tls.enabled=false")
    assert _named(objects, "Secret", f"{FULLNAME}-tls") is None
    pod, container = _server(objects)
    assert not {"SYSOPS_TLS_CERT", "SYSOPS_TLS_KEY", "SYSOPS_TLS_CA", "SYSOPS_HOST_SERVER_NAME"} & set(_env(container))
    assert "tls" not in {volume["name"] for volume in pod["volumes"]}


def test_the_pod_token_key_is_a_secret_every_replica_mounts(render: Render) -> None:
    objects = render("--set", "tls.enabled=false")
    keys = _named(objects, "Secret", f"{FULLNAME}-keys")
    assert keys is not None and len(base64.b64decode(keys["data"]["token-key"])) == 64
    pod, container = _server(objects)
    assert _env(container)["SYSOPS_TOKEN_KEY_FILE"]["value"] == "/etc/sysops-keys/token-key"
    [volume] = [volume for volume in pod["volumes"] if volume["name"] == "keys"]
    assert volume["secret"] == {"secretName": f"{FULLNAME}-keys", "defaultMode": 0o440}


def test_secrets_are_created_and_deleted_but_read_only_by_name(render: Render) -> None:
    role = _one(render(), "Role")
    for rule in role["rules"]:
        if "secrets" in rule["resources"] and "resourceNames" not in rule:
            assert set(rule["verbs"]) == {"create", "delete", "deletecollection"}, rule


def test_a_malformed_existing_secret_name_is_refused(helm: str) -> None:
    from tests.unit.test_chart import _template

    result = _template(helm, "--set", "tls.existingSecret=Not_A_Name")
    assert result.returncode != 0 and "existingSecret" in result.stderr


def test_an_existing_keys_secret_is_mounted_and_none_generated(render: Render) -> None:
    """GitOps renders without a cluster (lookup finds nothing): a generated key would change on every sync."""
    objects = render("--set", "keys.existingSecret=my-keys")
    assert _named(objects, "Secret", f"{FULLNAME}-keys") is None
    pod, _ = _server(objects)
    [volume] = [volume for volume in pod["volumes"] if volume["name"] == "keys"]
    assert volume["secret"] == {"secretName": "my-keys", "defaultMode": 0o440}


def test_a_malformed_existing_keys_secret_name_is_refused(helm: str) -> None:
    from tests.unit.test_chart import _template

    result = _template(helm, "--set", "keys.existingSecret=Not_A_Name")
    assert result.returncode != 0 and "existingSecret" in result.stderr
