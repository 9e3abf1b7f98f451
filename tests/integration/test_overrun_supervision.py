"""A command that overruns its deadline and then fails health gets its instance restarted at once (issue 9
item 2: "a command overruns its deadline and health then fails" -> restart), on the real engine through the
resident host, where the router and the supervisor share core/suspects.py.

The liveness interval is 60 s with 3 failures, so the probes alone would take minutes to notice the wedge;
the overrun makes the supervisor probe the instance at its next tick, and that one failed probe suffices.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Sysops, wait_for, write_plugin
from tests.integration.test_supervision import WEDGE_CODE

pytestmark = pytest.mark.integration
MANIFEST = (
    "liveness:\n  interval_s: 60\n  timeout_s: 1\n  failures: 3\ncommands:\n  wedge-hang:\n    timeout_seconds: 2\n"
)


def _events(cli: Sysops) -> list[dict[str, object]]:
    listed = cli.run("events", "--plugin", "wedge", "--output", "json", timeout=30)
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]


def test_an_overrun_then_a_failed_probe_restarts_the_instance_long_before_its_interval(
    fresh_sysops: Sysops, tmp_path: Path
) -> None:
    cli = fresh_sysops
    plugin_dir = write_plugin(tmp_path / "wedge", name="wedge", code=WEDGE_CODE, manifest_extra=MANIFEST)
    cli.ok("plugin", "up", str(plugin_dir))
    assert cli.ok("wedge-ping").strip() == "pong"
    started = time.monotonic()
    hung = cli.run("wedge-hang", timeout=60)
    assert hung.returncode == 10, hung.stderr
    assert "overran its 2s deadline" in hung.stderr

    def restarted() -> bool:
        return any(event["kind"] == "restarted" for event in _events(cli))

    wait_for(restarted, 20, "the supervisor to restart the wedged instance after the overrun")
    print(f"restarted {time.monotonic() - started:.1f}s after the wedging call began (liveness interval 60 s)")
    (unresponsive,) = [e["message"] for e in _events(cli) if e["kind"] == "unresponsive"]
    assert str(unresponsive).startswith("a command overran its deadline and the health check then failed")
    assert cli.ok("wedge-ping", timeout=60).strip() == "pong"
