"""The SDK's dependency checks (`Plugin.is_plugin_available`, `Plugin.check_dependencies`) over FakeHost's
`plugins` service, as a plugin's own unit tests would run them."""

from __future__ import annotations

from typing import ClassVar

from sysops_sdk import Plugin
from sysops_sdk.testing import FakeHost


class Needy(Plugin):
    name = "needy"
    requires: ClassVar[list[str]] = ["monitoring>=1.0", "db"]

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass


def test_is_plugin_available_asks_the_host_with_the_range() -> None:
    host = FakeHost(plugins={"monitoring": "1.4.0"})
    plugin = Needy(services=host.services())
    assert plugin.is_plugin_available("monitoring")
    assert plugin.is_plugin_available("monitoring", ">=1.0,<2")
    assert not plugin.is_plugin_available("monitoring", ">=2")
    assert not plugin.is_plugin_available("db")
    assert [(c.service, c.method, c.arguments) for c in host.calls][:2] == [
        ("plugins", "available", {"name": "monitoring", "spec": ""}),
        ("plugins", "available", {"name": "monitoring", "spec": ">=1.0,<2"}),
    ]


def test_check_dependencies_needs_the_manifest_and_the_class_requirements() -> None:
    assert Needy(services=FakeHost(plugins={"monitoring": "1.0", "db": "3.1"}).services()).check_dependencies()
    assert not Needy(services=FakeHost(plugins={"monitoring": "0.9", "db": "3.1"}).services()).check_dependencies()
    assert not Needy(services=FakeHost(plugins={"monitoring": "1.0"}).services()).check_dependencies()
    unmet = FakeHost(plugins={"monitoring": "1.0", "db": "3.1"}, unmet=["needy 1.0 requires cache"])
    assert not Needy(services=unmet.services()).check_dependencies()
