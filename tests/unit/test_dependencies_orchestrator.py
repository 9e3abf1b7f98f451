"""Dependencies in the orchestrator on the in-process fake driver: the catalog, the host-side refusal of an
Up whose requirements are not running, and `down` refused / `--cascade` / `--force` for required plugins."""

from __future__ import annotations

from typing import Any

from sysops.core.catalog import catalog_entries
from sysops.core.manifest import parse_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.core.rollout import RollTarget
from sysops.runtime.fake import FakeDriver
from sysops_sdk import Plugin


class Quiet(Plugin):
    """A plugin without commands (several run at once without claiming one name)."""

    name = "quiet"
    version = "1.0.0"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass


def _manifest(name: str, version: str = "1.0.0", **keys: Any) -> Any:
    return parse_manifest({"name": name, "version": version, "entrypoint": "x:Y", **keys}, "test")


def _roll(orchestrator: Orchestrator, name: str, version: str = "1.0.0", **keys: Any) -> None:
    image = f"{name}-{version}"
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    driver.add_image(image, Quiet)
    orchestrator.rollout.roll(RollTarget(_manifest(name, version, **keys), image, image, f"fp-{image}", f"/src/{name}"))


def test_catalog_lists_each_key_with_its_revisions_and_dependency_fields(orchestrator: Orchestrator) -> None:
    _roll(orchestrator, "a", "1.0.0")
    _roll(orchestrator, "a", "1.2.0")
    _roll(orchestrator, "b", "2.0.0", requires=["a>=1.1"], conflicts=["old"], compatibility={"python": ">=3.10"})
    orchestrator.down("a")
    entries = {entry["key"]: entry for entry in catalog_entries(orchestrator.store)}
    assert set(entries) == {"a", "b"}
    assert entries["a"]["running"] is False and entries["a"]["version"] == "1.2.0" and entries["a"]["revision"] == 2
    assert [r["version"] for r in entries["a"]["revisions"]] == ["1.0.0", "1.2.0"]
    b = entries["b"]
    assert (b["name"], b["version"], b["running"], b["revision"]) == ("b", "2.0.0", True, 1)
    assert b["requires"] == ["a>=1.1"] and b["conflicts"] == ["old"] and b["types"] == ["command"]
    assert b["compatibility"] == {"sysops": ">=0.1", "python": ">=3.10", "sdk": ">=0.1"}
    assert b["revisions"][0]["requires"] == ["a>=1.1"]


def test_catalog_is_served_as_a_query_kind(control_host: Orchestrator) -> None:
    from sysops.cli.plugin_cmd import control_client

    _roll(control_host, "a", "1.0.0")
    client = control_client()
    try:
        [entry] = client.catalog()
    finally:
        client.close()
    assert (entry["key"], entry["name"], entry["version"], entry["running"]) == ("a", "a", "1.0.0", True)
