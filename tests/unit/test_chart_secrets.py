"""The chart's Role and integration plugins' Kubernetes secrets: `get` on exactly the Secrets the policy's
plugin secrets name (policy.plugins.NAME.secrets.SECRET.kubernetes.name), and no rule on secrets without any."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.unit.test_chart import Render, _template, helm, render  # noqa: F401  (fixtures)


def _secret_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules that let the server read Secrets (the create/delete rule of plugin pods' token Secrets aside)."""
    [role] = [doc for doc in docs if doc["kind"] == "Role"]
    return [rule for rule in role["rules"] if "secrets" in rule["resources"] and "get" in rule["verbs"]]


def _values(tmp_path: Path, plugins: dict[str, Any]) -> str:
    path = tmp_path / "values.json"
    path.write_text(json.dumps({"policy": {"plugins": plugins}}))
    return str(path)


def test_no_secret_reference_no_rule_on_secrets(render: Render, tmp_path: Path) -> None:  # noqa: F811
    assert _secret_rules(render()) == []
    file_only = {"status-api": {"secrets": {"api-token": {"file": "/etc/sysops/token"}}}, "*": {"grants": ["x.y"]}}
    assert _secret_rules(render("-f", _values(tmp_path, file_only))) == []


def test_get_only_on_the_named_secrets(render: Render, tmp_path: Path) -> None:  # noqa: F811
    plugins = {
        "status-api": {
            "grants": ["config.read"],
            "secrets": {
                "api-token": {"kubernetes": {"name": "status-api", "key": "token"}},
                "local": {"file": "/etc/sysops/token"},
            },
        },
        "billing": {
            "secrets": {
                "key": {"kubernetes": {"name": "billing-keys", "key": "k"}},
                "again": {"kubernetes": {"name": "status-api", "key": "other"}},
            }
        },
    }
    assert _secret_rules(render("-f", _values(tmp_path, plugins))) == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["billing-keys", "status-api"]}
    ]


def test_a_malformed_reference_is_refused_by_the_schema(helm: str, tmp_path: Path) -> None:  # noqa: F811
    bad = {"status-api": {"secrets": {"api-token": {"kubernetes": {"name": "Status_API"}}}}}
    result = _template(helm, "-f", _values(tmp_path, bad))
    assert result.returncode != 0
    assert "secrets" in result.stderr
