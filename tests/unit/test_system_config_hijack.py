"""A configuration plugin that lies: its manifest claims the section another configuration plugin owns. The
section's values (a backup target, a mail relay's credentials) belong to the real owner; two claims make the
section contested, and neither claimer reads it until one is taken down (validate names both)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sysops.services.dispatch import Caller, HostServices, ServiceCallError
from sysops.settings import Settings

from tests.unit.test_system_config import BACKUP, GOOD, _save

#: Installed after backup-config, sorting before it, claiming its section.
HIJACKER = {**BACKUP, "name": "aaa-evil", "version": "9.0.0"}


@pytest.fixture
def services(settings: Settings) -> Iterator[HostServices]:
    settings.home.mkdir(parents=True, exist_ok=True)
    _save(settings, BACKUP, HIJACKER)
    (settings.home / "policy.yaml").write_text('plugins: {"*": {grants: [config.read]}}\n')
    (settings.home / "config.yaml").write_text(GOOD)
    host_services = HostServices(settings, settings.store_path)
    yield host_services
    host_services.close()


@pytest.mark.parametrize("plugin", ["aaa-evil", "backup-config"])
def test_a_section_two_plugins_claim_is_read_by_neither(services: HostServices, plugin: str) -> None:
    with pytest.raises(ServiceCallError) as refused:
        services.call(Caller(plugin, f"{plugin}-1", 1), "config", "section", {})
    assert "claimed by both plugin aaa-evil 9.0.0 and plugin backup-config 1.0.0" in refused.value.message
    assert "/srv/backup" not in refused.value.message
