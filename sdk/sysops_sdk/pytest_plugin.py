"""The sysops test kit for plugin authors, loaded by pytest through the SDK's `pytest11` entry point.

    def test_greet(plugin):
        result = plugin.invoke("greet", "World", shout=True)
        assert result.exit_code == 0 and result.text == "HELLO, WORLD!"

The fixture `plugin` is the plugin whose plugin.yaml is nearest above the test file (or in the ini option
`sysops_plugin_dir`), as a `sysops_sdk.testing.PluginUnderTest`. Two modes behind the same interface:
`inprocess` (the default: imported into the test process on a FakeHost, fast) and `container`
(`--sysops-mode=container` or SYSOPS_TEST_MODE=container: built and run by the `sysops` CLI in its real
container, once per test session, under a private SYSOPS_HOME; faithful). Nothing heavy is imported until a
test asks for the fixture: this module is loaded in every pytest run of an environment with the SDK.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sysops_sdk._kit_manifest import KitError, KitManifest, find_plugin_dir, read_manifest

if TYPE_CHECKING:
    from sysops_sdk._kit_container import ContainerDeployments
    from sysops_sdk.testing import PluginUnderTest

MODES = ("inprocess", "container")
MODE_ENV = "SYSOPS_TEST_MODE"
PLUGIN_DIR_INI = "sysops_plugin_dir"


def pytest_addoption(parser: pytest.Parser) -> None:
    """--sysops-mode and the ini option sysops_plugin_dir."""
    parser.getgroup("sysops", "sysops plugin test kit").addoption(
        "--sysops-mode",
        choices=MODES,
        default=None,
        help=f"run the `plugin` fixture in-process (default) or in its real container (env {MODE_ENV})",
    )
    parser.addini(PLUGIN_DIR_INI, "the plugin directory (holding plugin.yaml) of the `plugin` fixture", default="")


def pytest_configure(config: pytest.Config) -> None:
    """Refuse an unknown SYSOPS_TEST_MODE before any test runs (a usage error, pytest's exit 4)."""
    kit_mode(config)


def kit_mode(config: pytest.Config) -> str:
    """The mode asked for: --sysops-mode, else SYSOPS_TEST_MODE, else in-process."""
    mode = config.getoption("--sysops-mode") or os.environ.get(MODE_ENV) or "inprocess"
    if mode not in MODES:
        raise pytest.UsageError(f"{MODE_ENV}={mode!r}: use one of {', '.join(MODES)}")
    return str(mode)


def plugin_manifest(request: pytest.FixtureRequest) -> KitManifest:
    """The plugin.yaml of the plugin under test for the requesting test."""
    configured = str(request.config.getini(PLUGIN_DIR_INI) or "")
    if configured:
        base = request.config.inipath.parent if request.config.inipath else request.config.rootpath
        directory = (base / configured).resolve()
    else:
        directory = find_plugin_dir(Path(request.path).resolve().parent)
    return read_manifest(directory)


@pytest.fixture(scope="session")
def sysops_deployments() -> Iterator[ContainerDeployments]:
    """The plugins brought up in container mode during this session; all brought down at its end."""
    from sysops_sdk._kit_container import ContainerDeployments

    deployments = ContainerDeployments()
    try:
        yield deployments
    finally:
        deployments.close()


@pytest.fixture
def plugin(request: pytest.FixtureRequest) -> Iterator[PluginUnderTest]:
    """The plugin under test (see the module docstring); a fresh instance per test in-process."""
    mode = kit_mode(request.config)
    try:
        manifest = plugin_manifest(request)
        if mode == "container":
            deployments: ContainerDeployments = request.getfixturevalue("sysops_deployments")
            yield deployments.plugin(manifest)
            return
        from sysops_sdk._kit_inprocess import InProcessPlugin

        under_test = InProcessPlugin(manifest)
    except KitError as exc:
        pytest.fail(f"sysops test kit: {exc}", pytrace=False)
    try:
        yield under_test
    finally:
        under_test.close()
