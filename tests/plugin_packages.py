"""Installed-package plugins for tests: a distribution's metadata that declares a `sysops.plugins` entry point.

Writing a `.dist-info` directory into a directory on the Python path is all `importlib.metadata` needs to
see an installed distribution; the package it names is written by the test beside it.
"""

from __future__ import annotations

from pathlib import Path


def declare_entry_point(site: Path, *, distribution: str, name: str, value: str, version: str = "1.0") -> Path:
    """Write `<distribution>-<version>.dist-info` (METADATA, entry_points.txt) into `site`; return that directory."""
    dist_info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
    (dist_info / "entry_points.txt").write_text(f"[sysops.plugins]\n{name} = {value}\n")
    return dist_info
