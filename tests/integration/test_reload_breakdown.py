"""`plugin up --watch` prints one line per reload with where its time went (core/reload_timing.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.conftest import Sysops, copy_example, wait_for, watch_session

pytestmark = pytest.mark.integration

_LINE = re.compile(
    r"reload: detect (?P<detect>[0-9.]+)s, build (?P<build>[0-9.]+)s, start (?P<start>[0-9.]+)s, "
    r"ready (?P<ready>[0-9.]+)s, switch (?P<switch>[0-9.]+)s -> serving (?P<serving>[0-9.]+)s"
)


def test_each_reload_prints_its_breakdown(fresh_sysops: Sysops, tmp_path: Path) -> None:
    plugin_dir = copy_example("hello", tmp_path)
    log = tmp_path / "watch.log"
    source = plugin_dir / "hello_plugin" / "plugin.py"
    original = source.read_text()
    with watch_session(fresh_sysops, plugin_dir, log):
        # "watching" is printed just before the watcher starts: a save in between is missed, so save again.
        for attempt in range(1, 7):
            source.write_text(original.replace("self.greeted += 1", f"self.greeted += {attempt}"))
            try:
                wait_for(lambda: _LINE.search(log.read_text()) is not None, 30, "the reload's breakdown line")
                break
            except AssertionError:
                if attempt == 6:
                    output = log.read_text()[-3000:]
                    raise AssertionError(f"no breakdown line in the watch's output:\n{output}") from None
        assert fresh_sysops.run("greet", "World").returncode == 0
    match = _LINE.search(log.read_text())
    assert match is not None
    phases = {name: float(value) for name, value in match.groupdict().items()}
    assert all(seconds >= 0 for seconds in phases.values())
    in_order = ("detect", "build", "start", "ready", "switch")
    assert abs(sum(phases[name] for name in in_order) - phases["serving"]) < 0.01
    assert phases["start"] > 0 and phases["ready"] > 0  # the roll's own lines were stamped, not only the build
