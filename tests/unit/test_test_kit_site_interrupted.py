"""The test kit's site (imaging/test_kit_site.py) leaves no half-unpacked directory when a run is interrupted.

`sysops plugin test` turns Ctrl-C, SIGTERM and SIGHUP into KeyboardInterrupt; one that arrives while the
wheels are unpacked must not leave a `.unpacking-*` directory in the cache.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from sysops.imaging import test_kit_site as kit


def test_an_interrupted_unpacking_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheels = tmp_path / "wheels" / "abc123"
    wheels.mkdir(parents=True)
    with zipfile.ZipFile(wheels / "demo-1.0-py3-none-any.whl", "w") as archive:
        archive.writestr("demo/__init__.py", "")
    monkeypatch.setattr(kit, "prepare_wheels", lambda requirements, cache_dir: wheels)

    def interrupted(self: zipfile.ZipFile, path: object = None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile.ZipFile, "extractall", interrupted)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        kit.test_kit_site(cache, ["demo"])
    assert not list((cache / "test-kit").iterdir())
