"""Static checks at build on the real engine: a plugin whose code has a finding the policy blocks is refused by
`plugin up` before any image is built (exit 9, one line naming file:line and rule); an operator's policy that
lowers the bar lets the same plugin up, and the report of what was built is kept for the rating."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest

from tests.integration.conftest import Sysops, plugin_code, write_plugin

pytestmark = pytest.mark.integration

#: A command that hands its argument to a shell: bandit's B602, high severity.
SHELL_CODE = (
    plugin_code("sc-shell", command="sc-shell-run").replace(
        "from sysops_sdk import", "import subprocess\nfrom sysops_sdk import"
    )
    + '\n\ndef run_in_shell(command: str) -> int:\n    return subprocess.call("echo " + command, shell=True)\n'
)


def _images_of(engine: docker.DockerClient, sysops: Sysops, plugin: str) -> list[str]:
    labels = [f"sysops.installation={sysops.installation_id}", f"sysops.plugin={plugin}"]
    return [image.id for image in engine.images.list(filters={"label": labels})]


def test_a_blocking_finding_refuses_up_before_the_build_and_a_lower_bar_lets_it_up(
    fresh_sysops: Sysops, engine: docker.DockerClient, tmp_path: Path
) -> None:
    plugin = write_plugin(tmp_path / "plugins", name="sc-shell", code=SHELL_CODE, command="sc-shell-run")
    shell_line = SHELL_CODE.splitlines().index('    return subprocess.call("echo " + command, shell=True)') + 1

    refused = fresh_sysops.run("plugin", "up", str(plugin), timeout=180)
    assert refused.returncode == 9, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"sc_shell_plugin/plugin.py:{shell_line} B602 (high)" in errors[0], refused.stderr
    assert "Traceback" not in refused.stderr and "building" not in refused.stderr
    assert _images_of(engine, fresh_sysops, "sc-shell") == []  # refused before any image was built
    report = json.loads((fresh_sysops.home / "cache/checks/sc-shell@1.0.0.json").read_text())
    assert {"B602", "process-spawn"} <= {finding["rule"] for finding in report["findings"]}

    (fresh_sysops.home / "policy.yaml").write_text("checks: {block: [high], ignore: [B602]}\n")
    fresh_sysops.ok("plugin", "up", str(plugin), timeout=180)
    assert fresh_sysops.ok("sc-shell-run").strip() == "pong"
    assert len(_images_of(engine, fresh_sysops, "sc-shell")) == 1
    checked = fresh_sysops.run("plugin", "check", str(plugin))
    assert checked.returncode == 0 and f"sc_shell_plugin/plugin.py:{shell_line}  high  B602" in checked.stdout
