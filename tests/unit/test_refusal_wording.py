"""Where a refusal tells the operator to grant a permission: the policy file, and on a server installed by the
Helm chart (SYSOPS_SERVER_SERVICE set) also the Helm value that fills that file (services/dispatch.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sysops.services.dispatch import CHART_ENV, HostServices
from sysops.settings import Settings
from sysops.store import Store

HEAD = "plugin 'keeper' needs permission 'config.read' for config.get, which policy does not grant"


@pytest.fixture
def services(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[HostServices]:
    monkeypatch.delenv(CHART_ENV, raising=False)
    store = Store(settings.store_path)
    manifest = {"name": "keeper", "version": "1.0.0", "permissions": ["config.read"]}
    store.save_plugin("keeper", "/src", "docker", manifest)
    store.close()
    (settings.home / "policy.yaml").write_text("plugins: {}\n")
    host_services = HostServices(settings, settings.store_path)
    yield host_services
    host_services.close()


def test_locally_the_refusal_names_the_policy_file(services: HostServices, settings: Settings) -> None:
    assert services.refusal("keeper", "config.read", "config.get") == (
        f"{HEAD} (add it under plugins.keeper.grants in {settings.home / 'policy.yaml'})"
    )


def test_from_the_chart_the_refusal_also_names_the_helm_value(
    services: HostServices, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CHART_ENV, "sysops")  # as charts/sysops/templates/deployment.yaml sets it
    assert services.refusal("keeper", "config.read", "config.get") == (
        f"{HEAD} (add it under plugins.keeper.grants in {settings.home / 'policy.yaml'}: "
        "the Helm value policy.plugins.keeper.grants)"
    )
