"""The host-side dependency check of a roll reads each running plugin once, not once per pair: with many
unrelated plugins running, only the ones whose rules name the rolled plugin (or that its conflicts name) are
checked again (the per-change path of a cluster's server must not grow with the number of plugins)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sysops.core import orchestrator as orchestrator_module
from sysops.core.manifest import parse_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.errors import DependencyError
from sysops.store import InstanceRecord


def _running(orchestrator: Orchestrator, name: str, **fields: Any) -> None:
    data = parse_manifest({"name": name, "version": "1.0.0", "entrypoint": "x:Y", **fields}, "t").model_dump(
        mode="json"
    )
    orchestrator.store.save_plugin(name, f"/src/{name}", "fake", data)
    record = InstanceRecord(name, name, 1, "1.0.0", f"h-{name}", "img", "img", "unix:///x", "/x", 0)
    orchestrator.store.add_instance(record)
    orchestrator.store.switch(name, add=[record], remove=[], routes={})


def test_only_plugins_naming_the_rolled_one_are_checked_again(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(60):
        _running(orchestrator, f"filler-{n:02d}")
    _running(orchestrator, "needs-a", requires=["a>=1"])
    _running(orchestrator, "hates-a", conflicts=["a<1"])
    checked: list[str] = []
    real = orchestrator_module.unmet

    def counting(candidate: Any, running: Any) -> list[str]:
        checked.append(candidate.name)
        return real(candidate, running)

    monkeypatch.setattr(orchestrator_module, "unmet", counting)
    manifest = parse_manifest({"name": "a", "version": "1.0.0", "entrypoint": "x:Y"}, "t")
    orchestrator._check_dependencies(manifest)
    assert sorted(checked) == ["a", "hates-a", "hates-a", "needs-a", "needs-a"]  # before and after, each


def test_a_plugin_requiring_the_rolled_one_still_refuses_a_breaking_version(orchestrator: Orchestrator) -> None:
    for n in range(20):
        _running(orchestrator, f"filler-{n:02d}")
    _running(orchestrator, "a")
    _running(orchestrator, "needs-a", requires=["a<2"])
    with pytest.raises(DependencyError, match=re.escape("needs-a 1.0.0 requires a<2")):
        orchestrator._check_dependencies(parse_manifest({"name": "a", "version": "2.0.0", "entrypoint": "x:Y"}, "t"))
    with pytest.raises(DependencyError, match="conflicts"):
        orchestrator._check_dependencies(
            parse_manifest({"name": "b", "version": "1.0.0", "entrypoint": "x:Y", "conflicts": ["filler-03"]}, "t")
        )
