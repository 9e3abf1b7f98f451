"""Security rating (core/rating.py), what an upgrade asks for beyond the serving version (core/manifest_growth.py)
and the held-upgrade gate with its approval and min_rating (core/held_upgrades.py), without an engine."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from sysops.cli.approve_cmd import held_difference
from sysops.core.held_upgrades import approve, held_path, held_upgrade_gate, held_view, load_held, manifest_digest
from sysops.core.manifest import Manifest
from sysops.core.manifest_growth import growth
from sysops.core.policy import Policy, apply_policy, load_policy
from sysops.core.rating import SignatureFacts, rate
from sysops.core.roll_gates import RollGate, roll_gates
from sysops.core.rollout import RollTarget
from sysops.distribution.installs import InstallRecord, save_install
from sysops.errors import ExitCode, NotFoundError, PolicyDeniedError, SysopsError, UsageError
from sysops.services.permissions import SERVICES
from sysops.settings import Settings

SIGNED = SignatureFacts(tier="private", signed=True)


def manifest(**fields: Any) -> Manifest:
    data = {"name": "tool", "version": "1.0.0", "entrypoint": "tool.plugin:P", **fields}
    return apply_policy(Manifest.model_validate(data), Policy(), "plugin.yaml")


@pytest.fixture(autouse=True)
def _no_policy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYSOPS_POLICY", raising=False)


def test_a_plugin_asking_nothing_is_rated_6() -> None:
    rating = rate(manifest(permissions=["state.read", "logs.write"]), Policy(), SIGNED, [])
    assert (rating.score, rating.reasons) == (6, ())


@pytest.mark.parametrize(
    ("fields", "score", "reason"),
    [
        ({"network": [{"host": "api.example.com", "ports": [443]}]}, 5, "network allow-list"),
        ({"network": [{"host": "10.0.0.0/8", "ports": [443]}]}, 4, "wide network (wide destinations 10.0.0.0/8)"),
        ({"network": [{"host": "api.example.com"}]}, 4, "wide destinations api.example.com"),
        ({"network": [{"host": f"h{i}.example.com", "ports": [443]} for i in range(6)]}, 4, "more than 5"),
        ({"permissions": ["deployment.read"]}, 5, "permissions beyond the host services deployment.read"),
        ({"permissions": ["deployment.execute"]}, 4, "privileged permissions deployment.execute"),
        ({"permissions": ["system.reboot", "state.read"]}, 4, "privileged permissions system.reboot"),
        ({"limits": {"memory_mb": 512}}, 5, "memory_mb 512 > 256"),
    ],
)
def test_each_ask_costs_its_points(fields: dict[str, Any], score: int, reason: str) -> None:
    rating = rate(manifest(**fields), Policy(), SIGNED, [])
    assert rating.score == score
    assert any(reason in line for line in rating.reasons), rating.reasons


def test_limits_are_compared_with_the_policy_defaults_not_the_built_in_ones() -> None:
    policy = Policy.model_validate({"defaults": {"memory_mb": 1024}})
    asked = apply_policy(Manifest.model_validate({**manifest().model_dump(), "limits": {"memory_mb": 512}}), policy, "")
    assert rate(asked, policy, SIGNED, []).score == 6
    assert rate(asked, Policy(), SIGNED, []).score == 5


def test_signature_tier_and_findings() -> None:
    plain = manifest()
    assert rate(plain, Policy(), SignatureFacts("private", signed=False), []).score == 5
    assert rate(plain, Policy(), SignatureFacts("community", signed=False), []).score == 4
    assert rate(plain, Policy(), SignatureFacts("official", signed=True), []).score == 6
    assert rate(plain, Policy(), SIGNED, ["low"]).score == 6
    assert rate(plain, Policy(), SIGNED, ["low", "medium"]).score == 5
    assert rate(plain, Policy(), SIGNED, ["medium", "high"]).score == 4


def test_the_rating_never_goes_below_1() -> None:
    worst = manifest(
        network=[{"host": "0.0.0.0/1"}], permissions=["system.*"], limits={"memory_mb": 4096, "cpu_percent": 400}
    )
    rating = rate(worst, Policy(), SignatureFacts("community", signed=False), ["high"])
    assert rating.score == 1
    assert len(rating.reasons) == 6


def test_the_host_service_namespaces_are_the_services_of_the_permission_table() -> None:
    from sysops.core.rating import HOST_SERVICE_NAMESPACES

    assert set(SERVICES) <= HOST_SERVICE_NAMESPACES


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ({}, {"permissions": ["system.deploy"]}, ["permission system.deploy"]),
        ({"permissions": ["a.b"]}, {"permissions": ["a.b"]}, []),
        ({}, {"secrets": ["token"]}, ["secret token"]),
        ({}, {"network": [{"host": "a.example", "ports": [443]}]}, ["network a.example:443"]),
        (
            {"network": [{"host": "a.example", "ports": [443]}]},
            {"network": [{"host": "A.example", "ports": [443]}]},
            [],
        ),
        (
            {"network": [{"host": "a.example", "ports": [443]}]},
            {"network": [{"host": "a.example", "ports": [443, 80]}]},
            ["network a.example:443,80"],
        ),
        (
            {"network": [{"host": "a.example", "ports": [443]}]},
            {"network": [{"host": "a.example"}]},
            ["network a.example (all ports)"],
        ),
        ({"network": [{"host": "10.0.0.0/8"}]}, {"network": [{"host": "10.1.2.3", "ports": [5432]}]}, []),
        (
            {"network": [{"host": "10.1.0.0/16"}]},
            {"network": [{"host": "10.0.0.0/8"}]},
            ["network 10.0.0.0/8 (all ports)"],
        ),
        ({"network": [{"host": "a.example"}]}, {"network": "none"}, []),
        ({}, {"limits": {"memory_mb": 512}}, ["limits.memory_mb 256 -> 512"]),
        ({"limits": {"memory_mb": 512}}, {"limits": {"memory_mb": 128}}, []),
        ({"limits": {"network_connections": 10}}, {}, ["limits.network_connections 10 -> unlimited"]),
    ],
)
def test_what_an_upgrade_asks_for_beyond_the_serving_version(
    before: dict[str, Any], after: dict[str, Any], expected: list[str]
) -> None:
    assert growth(manifest(**before), manifest(version="2.0.0", **after)) == expected


def _target(m: Manifest) -> RollTarget:
    return RollTarget(m, f"sysops-tool:{m.version}", "sha256:" + "ab" * 32, f"fp-{m.version}", "/src/tool")


def _holding_gate(home: Path, hold: str = "all") -> RollGate:
    """The gate of an installation whose policy holds upgrades of `hold` plugins."""
    (home / "policy.yaml").write_text(f"hold_upgrades: {hold}\n")
    return held_upgrade_gate(Settings(home=home))


def test_by_default_only_upgrades_of_installed_plugins_are_held(tmp_path: Path) -> None:
    v1, v2 = manifest(), manifest(version="2.0.0", permissions=["system.deploy"])
    held_upgrade_gate(Settings(home=tmp_path))(_target(v2), v1)  # brought up from a directory: its operator chose
    for kind in ("pip", "git", "index", "oci"):
        save_install(tmp_path, InstallRecord("tool", "tool", kind, "1.0.0", "community", "/src/tool"))  # type: ignore[arg-type]
        with pytest.raises(PolicyDeniedError, match="is held"):
            held_upgrade_gate(Settings(home=tmp_path))(_target(v2), v1)
    save_install(tmp_path, InstallRecord("tool", "/src/tool", "path", "1.0.0", "private", "/src/tool"))
    held_upgrade_gate(Settings(home=tmp_path))(_target(v2), v1)
    with pytest.raises(PolicyDeniedError, match="is held"):
        _holding_gate(tmp_path, "all")(_target(v2), v1)
    _holding_gate(tmp_path, "none")(_target(v2), v1)


def test_an_upgrade_asking_more_is_held_and_the_record_is_private(tmp_path: Path) -> None:
    gate = _holding_gate(tmp_path)
    v1, v2 = manifest(), manifest(version="2.0.0", permissions=["system.deploy"])
    with pytest.raises(PolicyDeniedError) as refused:
        gate(_target(v2), v1)
    assert refused.value.exit_code == ExitCode.POLICY_DENIED
    message = str(refused.value)
    assert "upgrade of tool 1.0.0 -> 2.0.0 is held" in message
    assert "permission system.deploy" in message and "1.0.0 keeps serving" in message
    assert "`sysops plugin approve tool`" in message
    path = held_path(tmp_path, "tool")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    held = load_held(tmp_path, "tool")
    assert held is not None and not held.approved
    assert (held.version, held.serving_version, held.grew) == ("2.0.0", "1.0.0", ["permission system.deploy"])
    assert (held.rating_before, held.rating_after) == (5, 3)
    assert held.digest == manifest_digest(v2) and held.source == "/src/tool"


def test_an_approved_digest_is_admitted_once_and_only_that_one(tmp_path: Path) -> None:
    gate = _holding_gate(tmp_path)
    v1, v2 = manifest(), manifest(version="2.0.0", permissions=["system.deploy"])
    with pytest.raises(PolicyDeniedError):
        gate(_target(v2), v1)
    with pytest.raises(UsageError, match="changed since it was shown"):
        approve(tmp_path, {"plugin": "tool", "digest": "0" * 64})
    assert approve(tmp_path, {"plugin": "tool", "digest": manifest_digest(v2)})["approved"] is True
    other = manifest(version="2.0.1", permissions=["system.deploy"])
    with pytest.raises(PolicyDeniedError):  # another manifest than the approved one: held again
        gate(_target(other), v1)
    assert load_held(tmp_path, "tool").version == "2.0.1"  # type: ignore[union-attr]
    approve(tmp_path, {"plugin": "tool", "digest": manifest_digest(other)})
    gate(_target(other), v1)  # admitted
    assert load_held(tmp_path, "tool") is None
    with pytest.raises(PolicyDeniedError):  # the approval was used
        gate(_target(other), v1)


def test_asking_nothing_more_or_a_first_start_is_not_held_and_drops_a_held_record(tmp_path: Path) -> None:
    gate = _holding_gate(tmp_path)
    v1 = manifest(permissions=["state.read"])
    gate(_target(manifest(version="9.0.0", permissions=["system.x"])), None)  # first start
    with pytest.raises(PolicyDeniedError):
        gate(_target(manifest(version="2.0.0", permissions=["state.read", "system.x"])), v1)
    gate(_target(manifest(version="3.0.0", permissions=["state.read"], limits={"memory_mb": 64})), v1)
    assert load_held(tmp_path, "tool") is None


def test_min_rating_refuses_a_plugin_rated_lower(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("min_rating: 5\n")
    assert load_policy(tmp_path).min_rating == 5
    gate = held_upgrade_gate(Settings(home=tmp_path))
    gate(_target(manifest()), None)  # 5: unsigned private
    with pytest.raises(PolicyDeniedError, match=r"tool 1.0.0 is rated 4, below the policy's min_rating 5 \(") as e:
        gate(_target(manifest(network=[{"host": "a.example", "ports": [443]}])), None)
    assert "-1 network allow-list" in str(e.value)


@pytest.mark.parametrize("value", ["0", "7", "'5'", "true"])
def test_a_min_rating_out_of_range_is_refused_naming_the_key(tmp_path: Path, value: str) -> None:
    (tmp_path / "policy.yaml").write_text(f"min_rating: {value}\n")
    with pytest.raises(PolicyDeniedError, match="key 'min_rating'"):
        load_policy(tmp_path)


def test_the_gate_is_registered(tmp_path: Path) -> None:
    gates = roll_gates(Settings(home=tmp_path))
    assert any(getattr(gate, "__qualname__", "").startswith("held_upgrade_gate") for gate in gates)


def test_hostile_held_records_and_arguments(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        held_view(tmp_path, "tool")
    with pytest.raises(UsageError):
        held_view(tmp_path, "../etc")
    with pytest.raises(UsageError, match="must be non-empty strings"):
        approve(tmp_path, {"plugin": "tool"})
    with pytest.raises(NotFoundError):
        approve(tmp_path, {"plugin": "tool", "digest": "x"})
    held_path(tmp_path, "tool").parent.mkdir()
    held_path(tmp_path, "tool").write_text(json.dumps({"key": "tool"}))
    with pytest.raises(UsageError, match=r"held/tool.json: not a held upgrade record"):
        load_held(tmp_path, "tool")
    held_path(tmp_path, "tool").write_bytes(b"\xff\xfe")
    with pytest.raises(SysopsError, match="not a held upgrade record"):
        held_view(tmp_path, "tool")


def test_the_difference_shown_before_approval(tmp_path: Path) -> None:
    gate = _holding_gate(tmp_path)
    v1 = manifest()
    v2 = manifest(version="2.0.0", permissions=["system.deploy"], network=[{"host": "a.example", "ports": [443]}])
    with pytest.raises(PolicyDeniedError):
        gate(_target(v2), v1)
    lines = held_difference(held_view(tmp_path, "tool"))
    assert lines[0] == "held upgrade of tool: 1.0.0 (serving) -> 2.0.0"
    assert "  + permission system.deploy" in lines and "  + network a.example:443" in lines
    assert "rating: 5 -> 2" in lines
    assert "  +- system.deploy" in lines and "  -version: 1.0.0" in lines and "  +version: 2.0.0" in lines


@pytest.mark.parametrize(
    "change",
    [{"grew": 5}, {"grew": [1]}, {"manifest": "m"}, {"serving_manifest": []}, {"held_at": "x"}, {"key": "other"}],
)
def test_a_held_record_with_fields_of_the_wrong_type_is_refused_in_one_line(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    gate = _holding_gate(tmp_path)
    with pytest.raises(PolicyDeniedError):
        gate(_target(manifest(version="2.0.0", permissions=["system.deploy"])), manifest())
    path = held_path(tmp_path, "tool")
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(UsageError, match=r"held/tool.json: not a held upgrade record") as caught:
        load_held(tmp_path, "tool")
    assert "\n" not in str(caught.value)
