"""Held upgrades: the replicas and the host log limits are limits the policy caps (core/policy.py caps
`replicas`, `logs_max_mb`, `logs_files`), so an upgrade raising them asks for more than the serving version."""

from __future__ import annotations

from typing import Any

from sysops.core.manifest import Manifest
from sysops.core.manifest_growth import growth
from sysops.core.policy import Policy, apply_policy


def manifest(**fields: Any) -> Manifest:
    data = {"name": "tool", "version": "1.0.0", "entrypoint": "tool.plugin:P", **fields}
    return apply_policy(Manifest.model_validate(data), Policy(), "plugin.yaml")


def test_more_replicas_and_more_host_logs_grow() -> None:
    serving = manifest(replicas=1, logs={"max_mb": 10, "files": 3})
    upgrade = manifest(version="2.0.0", replicas=4, logs={"max_mb": 100, "files": 20})
    assert growth(serving, upgrade) == ["replicas 1 -> 4", "logs.max_mb 10 -> 100", "logs.files 3 -> 20"]
    assert growth(upgrade, serving) == []
