"""A plugin packaged the ADR's way (setup.py + requirements.txt) builds offline and uses its dependency."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import Sysops, write_plugin

pytestmark = pytest.mark.integration

CODE = '''
import six

from sysops_sdk import Plugin, plugin_command


class P(Plugin):
    name = "legacy"
    version = "1.0.0"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("six-version")
    def six_version(self) -> str:
        """Report the version of the third-party package this plugin requires."""
        return six.__version__
'''


def test_setup_py_and_requirements_txt_plugin(fresh_sysops: Sysops, tmp_path: Path) -> None:
    plugin_dir = write_plugin(tmp_path / "legacy", name="legacy", code=CODE)
    (plugin_dir / "setup.py").write_text(
        "from setuptools import find_packages, setup\n\n"
        "setup(name='legacy-plugin', version='1.0.0', packages=find_packages(),\n"
        "      install_requires=open('requirements.txt').read().split())\n"
    )
    (plugin_dir / "requirements.txt").write_text("# runtime dependencies\nsix==1.16.0\n")
    up = fresh_sysops.run("plugin", "up", str(plugin_dir))
    assert up.returncode == 0, up.stderr
    assert "pip" in up.stderr and "requirements.txt" in up.stderr  # the dependency layer was built
    assert fresh_sysops.ok("six-version") == "1.16.0\n"
