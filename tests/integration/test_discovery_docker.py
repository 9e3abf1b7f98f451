"""Discovery on a real engine: a package that declares a `sysops.plugins` entry point (installed for the test
only: a .dist-info and the package in a directory on the CLI's PYTHONPATH), a plugin directory configured in
`$SYSOPS_HOME/config.yaml` and a broken plugin beside it. `sysops plugin discover` lists what it found and
skips the broken one with the reason; `sysops plugin up NAME` of the entry-point plugin brings it up on
Docker and its routed command answers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.conftest import Sysops, plugin_code, write_plugin
from tests.plugin_packages import declare_entry_point

pytestmark = pytest.mark.integration

PACKAGED = "disco-packaged"
LOCAL = "disco-local"
DISTRIBUTION = "disco-packaged-dist"


@pytest.fixture(scope="module")
def installed(sysops: Sysops, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The entry-point package, the configured plugin directory and the installation's config.yaml."""
    root = tmp_path_factory.mktemp("discovery")
    site = root / "site"
    package = write_plugin(
        site / "disco_sysops",
        name=PACKAGED,
        code=plugin_code(PACKAGED, command="disco-greet", answer="hello from an installed package"),
    )
    # Importing the package in the CLI would fail: discovery must locate it without importing it.
    (package / "__init__.py").write_text("raise RuntimeError('discovery imported plugin code')\n")
    declare_entry_point(site, distribution=DISTRIBUTION, name=PACKAGED, value="disco_sysops")

    plugins = root / "plugins"
    write_plugin(plugins / "local", name=LOCAL, code=plugin_code(LOCAL, command="disco-local"))
    broken = write_plugin(plugins / "broken", name="disco-broken", code=plugin_code("disco-broken"))
    (broken / "plugin.yaml").write_text("name: disco-broken\nversion: 1.0.0\nentrypoint: x.plugin:P\nmemory: 5\n")

    sysops.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    (sysops.home / "config.yaml").write_text(f"plugin_dirs: [{plugins}]\nsome-plugins-section: {{key: 1}}\n")
    sysops.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), sysops.env.get("PYTHONPATH", "")]))
    return {"package": package, "plugins": plugins, "broken": broken}


def test_discover_lists_the_package_and_the_directory_and_skips_the_broken_one(
    sysops: Sysops, installed: dict[str, Path]
) -> None:
    data = json.loads(sysops.ok("plugin", "discover", "-o", "json"))
    found = {plugin["name"]: plugin for plugin in data["found"]}
    assert found[PACKAGED]["path"] == str(installed["package"])
    assert found[PACKAGED]["source"] == f"entry point {PACKAGED} of {DISTRIBUTION} 1.0"
    assert found[PACKAGED]["origin"] == f"package {DISTRIBUTION}"
    assert found[LOCAL]["path"] == str(installed["plugins"] / "local")
    assert found[LOCAL]["source"] == f"plugin_dirs of {sysops.home / 'config.yaml'}"
    assert "disco-broken" not in found
    reasons = {entry["where"]: entry["why"] for entry in data["skipped"]}
    assert reasons[str(installed["broken"])].startswith(
        f"{installed['broken'] / 'plugin.yaml'}: unknown key 'memory' (allowed here: "
    )

    text = sysops.ok("plugin", "discover")
    assert any(line.split()[:2] == [PACKAGED, "1.0.0"] for line in text.splitlines())
    assert any(line.startswith(f"{installed['broken']}  ") for line in text.splitlines())


def test_up_by_name_builds_and_routes_the_entry_point_plugin(sysops: Sysops, installed: dict[str, Path]) -> None:
    result = sysops.run("plugin", "up", PACKAGED)
    assert result.returncode == 0, result.stderr
    assert f"{PACKAGED} 1.0.0 ready" in result.stderr
    assert sysops.ok("disco-greet").strip() == "hello from an installed package"
    listed = json.loads(sysops.ok("plugin", "ls", "-o", "json"))
    assert [plugin["name"] for plugin in listed] == [PACKAGED]


def test_up_of_an_unknown_name_points_at_discover(sysops: Sysops, installed: dict[str, Path]) -> None:
    result = sysops.run("plugin", "up", "disco-nowhere")
    assert result.returncode == 8, result.stderr
    assert "no discovered plugin named 'disco-nowhere'" in result.stderr
    assert "sysops plugin discover" in result.stderr
