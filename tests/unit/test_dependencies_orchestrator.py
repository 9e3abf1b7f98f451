"""Dependencies in the orchestrator on the in-process fake driver: the catalog, the host-side refusal of an
Up whose requirements are not running, and `down` refused / `--cascade` / `--force` for required plugins."""

from __future__ import annotations

from typing import Any

import pytest
from sysops.core.catalog import catalog_entries
from sysops.core.manifest import parse_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.core.rollout import RollTarget
from sysops.errors import DependencyError, ExitCode
from sysops.runtime.fake import FakeDriver
from sysops.store import InstanceRecord
from sysops_sdk import Plugin, plugin_command


class Quiet(Plugin):
    """A plugin without commands (several run at once without claiming one name)."""

    name = "quiet"
    version = "1.0.0"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass


class Greeter(Quiet):
    """A plugin with a command, to see whose routes the CLI gets."""

    @plugin_command("greet")
    def greet(self) -> str:
        return "hello"


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
    orchestrator.down("a", force=True)
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


def _chain(orchestrator: Orchestrator) -> None:
    """c requires b, b requires a; d runs beside them needing nothing."""
    _roll(orchestrator, "a", "1.0.0")
    _roll(orchestrator, "b", "1.0.0", requires=["a>=1"])
    _roll(orchestrator, "c", "1.0.0", requires=["b"])
    _roll(orchestrator, "d", "1.0.0")


def _running(orchestrator: Orchestrator) -> list[str]:
    return sorted(p.name for p in orchestrator.store.plugins() if orchestrator.store.active_instances(p.name))


def test_down_of_a_required_plugin_is_refused_naming_its_dependents(orchestrator: Orchestrator) -> None:
    _chain(orchestrator)
    with pytest.raises(DependencyError, match=r"plugin a is required by running plugins: c 1.0.0, b 1.0.0") as caught:
        orchestrator.down("a")
    assert caught.value.exit_code == ExitCode.CONFLICT
    assert _running(orchestrator) == ["a", "b", "c", "d"]


def test_down_cascade_takes_the_dependents_down_furthest_first(orchestrator: Orchestrator) -> None:
    _chain(orchestrator)
    lines: list[str] = []
    orchestrator.progress = lines.append
    orchestrator.down("a", cascade=True)
    assert _running(orchestrator) == ["d"]
    unloaded = [e.plugin for e in orchestrator.store.events_after(0) if e.kind == "unloaded"]
    assert unloaded == ["c", "b", "a"]
    assert lines == ["taking c down first (it requires a)", "taking b down first (it requires a)"]


def test_down_force_leaves_dependents_running_and_their_status_names_the_missing_requirement(
    orchestrator: Orchestrator,
) -> None:
    _chain(orchestrator)
    orchestrator.down("a", force=True)
    assert _running(orchestrator) == ["b", "c", "d"]
    missing = orchestrator.status("b").missing
    assert len(missing) == 1 and "a>=1" in missing[0]
    assert orchestrator.status("c").missing == [] and orchestrator.status("d").missing == []


def test_up_whose_requirement_is_not_running_is_refused_before_anything_starts(orchestrator: Orchestrator) -> None:
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    driver.add_image("b-img", Quiet)
    with pytest.raises(DependencyError, match=r"b 1\.0\.0 requires a>=1"):
        orchestrator.up_image(_manifest("b", requires=["a>=1"]), "b-img", "fp-b", "/src/b")
    assert driver.started_specs == [] and orchestrator.store.plugins() == []


def test_up_conflicting_with_a_running_plugin_is_refused_either_way(orchestrator: Orchestrator) -> None:
    _roll(orchestrator, "a", "2.0.0", conflicts=["old"])
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    driver.add_image("old-img", Quiet)
    started = len(driver.started_specs)
    with pytest.raises(DependencyError, match="conflicts"):
        orchestrator.up_image(_manifest("old"), "old-img", "fp-old", "/src/old")
    with pytest.raises(DependencyError, match="conflicts"):
        orchestrator.up_image(_manifest("new", conflicts=["a>=2"]), "old-img", "fp-new", "/src/new")
    assert len(driver.started_specs) == started and _running(orchestrator) == ["a"]


def test_rolling_a_required_plugin_out_of_its_dependents_range_is_refused(orchestrator: Orchestrator) -> None:
    _roll(orchestrator, "a", "1.0.0")
    _roll(orchestrator, "b", "1.0.0", requires=["a<2"])
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    driver.add_image("a2", Quiet)
    with pytest.raises(DependencyError, match=r"b 1\.0\.0 requires a<2"):
        orchestrator.up_image(_manifest("a", "2.0.0"), "a2", "fp-a2", "/src/a")
    assert orchestrator.status("a").version == "1.0.0"


def _greeters_side_by_side(
    orchestrator: Orchestrator, name: str, plain: str, beside: str, **keys: Any
) -> InstanceRecord:
    """Greeter versions of `name` brought up: `plain` under the name, `beside` (with manifest `keys`) under its
    side-by-side key; each version's image is `NAME-VERSION`. Returns the side-by-side instance."""
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    for version in (plain, beside):
        driver.add_image(f"{name}-{version}", Greeter)
    orchestrator.up_image(_manifest(name, plain), f"{name}-{plain}", f"fp-{plain}", f"/src/{name}{plain}")
    key = f"{name}--v{beside.split('.')[0]}"
    manifest = _manifest(name, beside, **keys)
    instance, _ = orchestrator.up_image(manifest, f"{name}-{beside}", f"fp-{beside}", f"/src/{name}{beside}", key=key)
    return instance


def test_a_side_by_side_version_runs_under_its_key_without_routes(orchestrator: Orchestrator) -> None:
    instance = _greeters_side_by_side(orchestrator, "echo", "2.0.0", "1.0.0")
    assert instance.plugin == "echo--v1" and instance.version == "1.0.0"
    assert {route.plugin for route in orchestrator.store.routes()} == {"echo"}
    assert {(s.name, s.version) for s in orchestrator.list()} == {("echo", "2.0.0"), ("echo--v1", "1.0.0")}
    with pytest.raises(Exception, match="its side-by-side key is 'echo--v1'"):
        orchestrator.up_image(_manifest("echo", "1.0.0"), "echo-1.0.0", "fp-1", "/src/echo1", key="echo--v3")


def test_cli_down_refusal_cascade_and_force(control_host: Orchestrator, capsys: pytest.CaptureFixture[str]) -> None:
    from sysops.cli.main import main

    _chain(control_host)
    assert main(["plugin", "down", "a"]) == ExitCode.CONFLICT
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "plugin a is required by running plugins: c 1.0.0, b 1.0.0" in error
    assert main(["plugin", "down", "b", "--cascade", "--force"]) == ExitCode.USAGE
    assert main(["plugin", "down", "b", "--force"]) == 0
    capsys.readouterr()
    assert main(["plugin", "status", "c"]) == 0
    assert "missing       c 1.0.0 requires b" in capsys.readouterr().out
    assert main(["plugin", "down", "a", "--cascade"]) == 0
    assert "taking c down first (it requires a)" not in capsys.readouterr().err  # c needs b, not a, once b is gone
    assert _running(control_host) == ["c", "d"]


def test_the_plugins_host_service_answers_any_plugin_without_a_grant(orchestrator: Orchestrator) -> None:
    from sysops.services.call import ServiceCallError
    from sysops.services.dispatch import Caller, HostServices

    _roll(orchestrator, "a", "1.2.0")
    _roll(orchestrator, "b", "1.0.0", requires=["a>=1", "monitoring>=2"], conflicts=["a<1.1"])
    services = HostServices(orchestrator.settings, orchestrator.settings.store_path)
    try:
        caller = Caller("b", "b-1", 1)  # b asks no permission and the policy grants nothing
        assert services.call(caller, "plugins", "available", {"name": "a"}) == {"available": True}
        assert services.call(caller, "plugins", "available", {"name": "a", "spec": ">=1.2,<2"}) == {"available": True}
        assert services.call(caller, "plugins", "available", {"name": "a", "spec": ">=2"}) == {"available": False}
        assert services.call(caller, "plugins", "available", {"name": "monitoring"}) == {"available": False}
        [line] = services.call(caller, "plugins", "check", {})["unmet"]
        assert "requires monitoring>=2" in line
        with pytest.raises(ServiceCallError, match="invalid version range"):
            services.call(caller, "plugins", "available", {"name": "a", "spec": "=>1"})
        orchestrator.down("a", force=True)
        assert services.call(caller, "plugins", "available", {"name": "a"}) == {"available": False}
        assert len(services.call(caller, "plugins", "check", {})["unmet"]) == 2
    finally:
        services.close()


def test_a_side_by_side_key_rolls_back_from_its_stored_manifest(orchestrator: Orchestrator) -> None:
    from sysops.core.catalog import parse_stored_manifest

    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    driver.add_image("g-1.0", Greeter)
    driver.add_image("g-1.1", Greeter)
    orchestrator.up_image(_manifest("g", "1.0.0"), "g-1.0", "fp-1.0", "/src/g", key="g--v1")
    orchestrator.up_image(_manifest("g", "1.1.0"), "g-1.1", "fp-1.1", "/src/g", key="g--v1")
    stored = orchestrator.store.plugin("g--v1")
    assert stored is not None and parse_stored_manifest(stored.manifest, "stored").name == "g--v1"
    instance = orchestrator.rollback("g--v1")
    assert (instance.plugin, instance.version, instance.revision) == ("g--v1", "1.0.0", 1)


def test_a_side_by_side_version_has_the_grants_of_its_plugin(orchestrator: Orchestrator) -> None:
    from sysops.services.call import ServiceCallError
    from sysops.services.dispatch import Caller, HostServices

    settings = orchestrator.settings
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "policy.yaml").write_text("plugins:\n  h: {grants: [metrics.write]}\n")
    orchestrator.store.save_plugin(
        "h--v1",
        "/src/h1",
        "fake",
        {"name": "h--v1", "version": "1.0.0", "permissions": ["metrics.write", "alerts.write"]},
    )
    services = HostServices(settings, settings.store_path)
    try:
        caller = Caller("h--v1", "h1-1", 1)
        assert services.call(caller, "metrics", "counter", {"name": "runs_total"}) is None
        with pytest.raises(ServiceCallError, match=r"add it under plugins\.h\.grants"):
            services.call(caller, "alerts", "raise", {"name": "x", "severity": "info", "message": "m"})
    finally:
        services.close()


def test_a_revision_of_a_plugin_that_is_down_starts_again_only_beside_its_requirements(
    orchestrator: Orchestrator,
) -> None:
    _roll(orchestrator, "a", "1.0.0")
    _roll(orchestrator, "b", "1.0.0", requires=["a>=1"])
    orchestrator.down("a", cascade=True)
    with pytest.raises(DependencyError, match=r"b 1\.0\.0 requires a>=1"):
        orchestrator.rollback("b")
    assert orchestrator.rollback("a").version == "1.0.0"
    assert orchestrator.rollback("b").version == "1.0.0"
    assert _running(orchestrator) == ["a", "b"]


def _down_side_by_side_pair(orchestrator: Orchestrator) -> None:
    """a 1.0.0 under `a` and a 2.0.0 (requiring z) under `a--v2` brought up, then both down."""
    _greeters_side_by_side(orchestrator, "a", "1.0.0", "2.0.0", requires=["z"])
    orchestrator.down("a")
    orchestrator.down("a--v2")


def test_a_plan_starts_a_revision_under_the_key_it_chose(
    control_host: Orchestrator, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sysops.cli.dependency_plan import describe, plan_up, run_steps
    from sysops.cli.plugin_cmd import control_client

    monkeypatch.delenv("SYSOPS_PLUGIN_PATH", raising=False)
    _roll(control_host, "z")
    _down_side_by_side_pair(control_host)
    client = control_client()
    try:
        steps, origins = plan_up(client, tmp_path, _manifest("c", requires=["a>=2"]))
        assert [describe(step, origins) for step in steps] == [
            "z 1.0.0: keep (running as z)",
            "a 2.0.0: start (revision 1 of a--v2)",
            f"c 1.0.0: start (directory {tmp_path})",
        ]
        lines: list[str] = []
        instance, changed = run_steps(client, steps[:-1], origins, lines.append)  # the root c is no directory here
    finally:
        client.close()
    assert (instance.plugin, instance.version, changed) == ("a", "2.0.0", True)
    assert _running(control_host) == ["a", "z"]
    assert {route.plugin for route in control_host.store.routes()} == {"a"}  # its commands reach it
    assert [r.image for r in control_host.store.revisions("a--v2")] == ["a-2.0.0"]  # the revision stays where it was


def test_a_revision_under_another_key_is_checked_as_an_up(orchestrator: Orchestrator) -> None:
    _roll(orchestrator, "z")
    _down_side_by_side_pair(orchestrator)
    orchestrator.down("z")
    with pytest.raises(DependencyError, match=r"a 2\.0\.0 requires z"):
        orchestrator.rollback("a--v2", 1, key="a")
    with pytest.raises(Exception, match="its side-by-side key is 'a--v2'"):
        orchestrator.rollback("a--v2", 1, key="a--v3")
    assert _running(orchestrator) == []
    _roll(orchestrator, "z")
    assert orchestrator.rollback("a--v2", 1, key="a").plugin == "a"
