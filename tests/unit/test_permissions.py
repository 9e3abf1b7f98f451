"""Permission names, grant matching and reports (services/permissions.py), and the policy's plugins:/callers:."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from sysops.core.manifest import parse_manifest
from sysops.core.policy import config_values_for, grants_for, load_policy, role_for_token
from sysops.errors import ManifestError, PolicyDeniedError
from sysops.services.permissions import (
    METHOD_PERMISSIONS,
    SERVICES,
    grant_matches,
    permission_for,
    permission_report,
    valid_grant,
    valid_permission,
)

MANIFEST = {"name": "mon", "version": "1.0.0", "entrypoint": "mon.plugin:Monitoring"}


@pytest.mark.parametrize("name", ["state.read", "system.deploy", "system.*", "admin", "a.b-c.d_e", "metrics.*.x"])
def test_valid_permission_names(name: str) -> None:
    assert valid_permission(name)
    assert valid_grant(name)


@pytest.mark.parametrize("name", ["", "State.read", "state.", ".read", "*.read", "state read", "state.read\n", "é.x"])
def test_invalid_permission_names(name: str) -> None:
    assert not valid_permission(name)
    assert not valid_grant(name)


def test_star_alone_is_a_grant_not_a_permission() -> None:
    assert valid_grant("*")
    assert not valid_permission("*")


@pytest.mark.parametrize(
    ("grant", "permission", "matches"),
    [
        ("system.deploy", "system.deploy", True),
        ("system.*", "system.deploy", True),
        ("system.*", "system.a.b", True),
        ("system.*", "system", False),
        ("system.*", "systemd.x", False),
        ("*", "anything.at.all", True),
        ("*", "admin", True),
        ("system.deploy", "system.deploy.more", False),
        ("system.deploy.more", "system.deploy", False),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.b.d", False),
        ("a.*.c", "a.b.x.c", False),
        ("state.read", "state.write", False),
    ],
)
def test_grant_matches_by_segment(grant: str, permission: str, matches: bool) -> None:
    assert grant_matches(grant, permission) is matches


def test_permission_report_never_grants_what_is_not_asked() -> None:
    report = permission_report(["state.read", "events.publish", "state.read"], ["*"])
    assert report.asked == ("events.publish", "state.read")
    assert report.granted == ("events.publish", "state.read")
    assert report.refused == ()
    report = permission_report(["state.read", "events.publish"], ["state.*", "metrics.write"])
    assert report.granted == ("state.read",)
    assert report.refused == ("events.publish",)
    assert "metrics.write" not in report.granted
    assert permission_report([], ["*"]).granted == ()


def test_method_table_matches_the_design() -> None:
    assert SERVICES == ("alerts", "config", "events", "logs", "metrics", "plugins", "secrets", "state")
    assert len(METHOD_PERMISSIONS) == 16
    assert permission_for("state", "cas") == "state.write"
    assert permission_for("alerts", "list") == "alerts.read"
    assert permission_for("events", "publish") == "events.publish"
    assert permission_for("state", "nope") is None
    assert all(valid_permission(permission) for permission in METHOD_PERMISSIONS.values())


def test_manifest_permissions_are_validated() -> None:
    assert parse_manifest({**MANIFEST, "permissions": ["state.*", "admin"]}, "plugin.yaml").permissions == [
        "state.*",
        "admin",
    ]
    with pytest.raises(ManifestError, match=r"plugin.yaml: key 'permissions': 'State\.read' is not a permission name"):
        parse_manifest({**MANIFEST, "permissions": ["state.read", "State.read"]}, "plugin.yaml")


def test_manifest_config_schema() -> None:
    config = {
        "threshold": {"type": "int", "default": 90, "help": "percent"},
        "mode": {"type": "str", "choices": ["fast", "safe"], "default": "safe"},
        "ratio": {"type": "float", "default": 1},
        "token": {"required": True},
    }
    manifest = parse_manifest({**MANIFEST, "config": config}, "plugin.yaml")
    assert manifest.config["threshold"].default == 90
    assert manifest.config["token"].type == "str"
    assert manifest.config["ratio"].problem(2) is None


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"bad-key": {}}, "key 'config.bad-key': must be an identifier"),
        ({"class": {}}, "must be an identifier"),
        ({"x": {"type": "tuple"}}, "key 'config.x.type'"),
        ({"x": {"type": "int", "default": "9"}}, "default must be of type int"),
        ({"x": {"type": "int", "default": True}}, "default must be of type int"),
        ({"x": {"type": "int", "choices": [1, 2], "default": 3}}, "default must be one of 1, 2"),
        ({"x": {"type": "bool", "choices": [1]}}, "choice must be of type bool"),
        ({"x": {"typo": 1}}, "unknown key 'config.x.typo' (allowed here: type, default, help, required, choices)"),
        ({f"k{i}": {} for i in range(65)}, "key 'config'"),
    ],
)
def test_manifest_config_schema_refusals(config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest({**MANIFEST, "config": config}, "plugin.yaml")
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("plugin.yaml: ")


def _policy(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "policy.yaml"
    path.write_text(text)
    return path


def test_policy_grants_and_config(home: Path) -> None:
    _policy(
        home,
        'plugins:\n  "*": {grants: [logs.write, "state.*"], config: {region: eu, level: 1}}\n'
        '  mon: {grants: ["metrics.*"], config: {level: 2}}\n',
    )
    policy = load_policy(home)
    assert grants_for(policy, "mon") == ["logs.write", "state.*", "metrics.*"]
    assert grants_for(policy, "other") == ["logs.write", "state.*"]
    assert config_values_for(policy, "mon") == {"region": "eu", "level": 2}
    assert config_values_for(policy, "other") == {"region": "eu", "level": 1}
    assert grants_for(load_policy(home / "none"), "mon") == []


def test_policy_callers_map_tokens_to_roles(home: Path) -> None:
    alice = hashlib.sha256(b"alice-token").hexdigest()
    bob = hashlib.sha256(b"bob-token").hexdigest()
    _policy(
        home,
        f"callers:\n  - {{name: alice, token_sha256: {alice}, role: viewer}}\n"
        f"  - {{name: bob, token_sha256: '{bob}', role: admin}}\n",
    )
    policy = load_policy(home)
    assert role_for_token(policy, "alice-token") == ("alice", "viewer")
    assert role_for_token(policy, "bob-token") == ("bob", "admin")
    assert role_for_token(policy, "nobody") is None
    assert role_for_token(policy, alice) is None  # the hash is not the token


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("plugins: {mon: {grants: [Bad]}}", "key 'plugins.mon.grants.0'"),
        ("plugins: {mon: {grants: ['*.x']}}", "not a grant"),
        ("plugins: {Bad_Name: {grants: []}}", "key 'plugins.Bad_Name.[key]'"),
        ("plugins: {mon: {grant: [state.read]}}", "key 'plugins.mon.grant'"),
        ("plugins: {mon: {config: {bad-key: 1}}}", "not a config key"),
        ("callers: [{name: a, token_sha256: abc, role: viewer}]", "key 'callers.0.token_sha256'"),
        ("callers: [{name: a, token_sha256: " + "a" * 64 + ", role: root}]", "key 'callers.0.role'"),
        ("callers: [{name: a, token: secret-token, role: viewer}]", "key 'callers.0.token_sha256': Field required"),
        (
            "callers: [{name: a, token_sha256: " + "a" * 64 + ", role: viewer}, "
            "{name: b, token_sha256: " + "a" * 64 + ", role: admin}]",
            "key 'callers.1.token_sha256': the same token_sha256 twice",
        ),
    ],
)
def test_policy_refuses_bad_plugins_and_callers(home: Path, text: str, fragment: str) -> None:
    path = _policy(home, text + "\n")
    with pytest.raises(PolicyDeniedError) as caught:
        load_policy(home)
    assert str(caught.value).startswith(f"{path}: ")
    assert fragment in str(caught.value)
    assert "secret-token" not in str(caught.value)
