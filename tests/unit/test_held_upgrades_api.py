"""Held upgrades through the orchestrator (fake driver) and the control API's `held` view and `upgrade-approve`
action (server/operator_api.py), with each caller role."""

from __future__ import annotations

from pathlib import Path

import pytest
from sysops.core.held_upgrades import APPROVE_ACTION, HELD_VIEW
from sysops.core.manifest import Manifest, parse_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.errors import NotFoundError, PolicyDeniedError
from sysops.runtime.fake import FakeDriver
from sysops.server import operator_api
from sysops.server.roles import Caller, Role
from sysops.services.dispatch import HostServices
from sysops.settings import Settings

from tests.unit.conftest import EchoV2


def _manifest(version: str, **fields: object) -> Manifest:
    return parse_manifest({"name": "echo", "version": version, "entrypoint": "x:Y", **fields}, "test")


@pytest.fixture(autouse=True)
def _no_policy_env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.delenv("SYSOPS_POLICY", raising=False)
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "policy.yaml").write_text("hold_upgrades: all\n")  # these plugins come from directories


def _versions(orchestrator: Orchestrator) -> list[str]:
    return [instance.version for instance in orchestrator.store.active_instances("echo")]


def test_held_then_approved_through_the_control_api(orchestrator: Orchestrator, settings: Settings) -> None:
    orchestrator.up_image(_manifest("1.0.0", permissions=["state.read"]), "echo-v1", "fp-1", "/src/echo")
    before = orchestrator.status("echo").rating
    wider = _manifest("2.0.0", permissions=["state.read", "system.deploy"])
    with pytest.raises(PolicyDeniedError, match="is held"):
        orchestrator.up_image(wider, "echo-v2", "fp-2", "/src/echo")
    assert _versions(orchestrator) == ["1.0.0"]

    services = HostServices(settings, settings.store_path)
    try:
        link = operator_api.HostServicesLink(services)
        held = operator_api.view(link, HELD_VIEW, "echo")
        assert (held["version"], held["grew"]) == ("2.0.0", ["permission system.deploy"])
        arguments = {"plugin": "echo", "digest": held["digest"]}
        for role in (Role.VIEWER, Role.OPERATOR):
            with pytest.raises(PolicyDeniedError, match="may not approve held upgrades; it needs role admin"):
                operator_api.act(link, Caller("someone", role), APPROVE_ACTION, arguments)
        assert operator_api.act(link, Caller("root", Role.ADMIN), APPROVE_ACTION, arguments)["approved"] is True
    finally:
        services.close()

    assert isinstance(orchestrator.driver, FakeDriver)
    orchestrator.driver.add_image("echo-v2", EchoV2)  # the refused roll removed the image it was given
    instance, changed = orchestrator.up_image(wider, "echo-v2", "fp-2", "/src/echo")
    assert changed and instance.version == "2.0.0"
    assert _versions(orchestrator) == ["2.0.0"]
    status = orchestrator.status("echo")
    assert status.rating == before - 2
    assert "-2 privileged permissions system.deploy" in status.rating_reasons
    services = HostServices(settings, settings.store_path)
    try:
        with pytest.raises(NotFoundError):  # the admitted roll dropped the record
            operator_api.view(operator_api.HostServicesLink(services), HELD_VIEW, "echo")
    finally:
        services.close()


def test_an_upgrade_asking_nothing_more_rolls(orchestrator: Orchestrator, home: Path) -> None:
    orchestrator.up_image(_manifest("1.0.0", permissions=["system.deploy"]), "echo-v1", "fp-1", "/src/echo")
    orchestrator.up_image(_manifest("2.0.0", permissions=["system.deploy"]), "echo-v2", "fp-2", "/src/echo")
    assert _versions(orchestrator) == ["2.0.0"]
    assert not (home / "held").exists()
