"""The static-check report kept for the rating is named so that no other plugin's build can replace it.

Plugin names hold '-' and PEP 440 versions may too ('1-2' is 1.post2): `x` 1-2 and `x-1` 2 must not share a
report, or building the clean `x-1` 2 would erase the findings the rating of `x` 1-2 reads."""

from __future__ import annotations

from pathlib import Path

from sysops.checks.findings import Finding
from sysops.checks.run import load_report, save_report
from sysops.core.manifest import parse_manifest


def test_a_plugin_whose_name_and_version_join_like_another_does_not_replace_its_report(tmp_path: Path) -> None:
    risky = parse_manifest({"name": "x", "version": "1-2", "entrypoint": "m:P"}, "test")
    clean = parse_manifest({"name": "x-1", "version": "2", "entrypoint": "m:P"}, "test")
    finding = Finding("pkg/plugin.py", 2, "B602", "high", "shell=True")
    save_report(tmp_path, risky, [finding])
    save_report(tmp_path, clean, [])
    assert load_report(tmp_path, "x", "1-2") == [finding]
    assert load_report(tmp_path, "x-1", "2") == []
