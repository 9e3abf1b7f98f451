"""The per-reload breakdown of `plugin up --watch` (core/reload_timing.py): phases from the roll's progress lines."""

from __future__ import annotations

import os
from pathlib import Path

from sysops.core.reload_timing import ReloadTimer, newest_change


def test_progress_lines_open_the_phases_in_order() -> None:
    timer = ReloadTimer(changed_at=100.0, detected_wall=100.05, detected=10.0)
    seen: list[str] = []
    stamped = timer.watching(seen.append)
    for message, at in [
        ("building image x", 10.1),
        ("starting hello 1.0.0 (revision 2)", 10.4),
        ("waiting for hello 1.0.0 to be ready", 10.6),
        ("starting something else", 10.65),  # a phase that began already keeps its first stamp
        ("switching hello to 1.0.0 (revision 2)", 10.8),
        ("draining hello 1.0.0 (revision 1)", 10.85),
    ]:
        timer.stamp(message, now=at)
        stamped(message)  # passes every line on
    assert len(seen) == 6
    phases = timer.breakdown(ended=11.0)
    assert {k: round(v, 3) for k, v in phases.items()} == {
        "detect": 0.05,
        "build": 0.4,
        "start": 0.2,
        "ready": 0.2,
        "switch": 0.05,
        "drain": 0.15,
        "serving": 0.9,
    }
    line = timer.line(ended=11.0)
    assert line.startswith("reload: detect 0.050s, build 0.400s, start 0.200s, ready 0.200s, switch 0.050s")
    assert line.endswith("-> serving 0.900s (drain 0.150s)")


def test_a_roll_that_did_not_switch_has_no_serving_time() -> None:
    timer = ReloadTimer(changed_at=None, detected=0.0)
    timer.stamp("starting hello 1.0.0 (revision 2)", now=0.5)
    phases = timer.breakdown(ended=1.0)
    assert phases == {"build": 0.5, "start": 0.5}
    assert "serving" not in timer.line(ended=1.0)


def test_newest_change_skips_deleted_paths(tmp_path: Path) -> None:
    older, newer = tmp_path / "a.py", tmp_path / "b.py"
    older.write_text("a")
    newer.write_text("b")
    os.utime(older, (1000, 1000))
    os.utime(newer, (2000, 2000))
    assert newest_change([str(older), str(newer), str(tmp_path / "gone.py")]) == 2000
    assert newest_change([str(tmp_path / "gone.py")]) is None


def test_a_development_roll_claims_a_spare_and_its_next_spare_is_not_drain_time() -> None:
    timer = ReloadTimer(changed_at=None, detected=10.0)
    for message, at in [
        ("claiming spare instance 0a1b2c for hello 1.0.0 (revision 3)", 10.1),
        ("waiting for hello 1.0.0 to be ready", 10.12),
        ("switching hello to 1.0.0 (revision 3)", 10.15),
        ("draining hello 1.0.0 (revision 2)", 10.16),
        ("spare instance of hello 1.0.0 starting, for the next save", 10.3),
    ]:
        timer.stamp(message, now=at)
    phases = {k: round(v, 3) for k, v in timer.breakdown(ended=11.0).items()}
    assert phases["start"] == 0.02 and phases["drain"] == 0.14 and phases["serving"] == 0.16
    assert timer.line(ended=11.0).endswith("(drain 0.140s)")
