"""Compatibility on the real Docker engine: a plugin whose Python or sysops range does not fit is refused before
any container starts, with one readable line and exit 4, and neither a container nor its image is left; `sysops
plugin doctor` lists a running plugin, names the upgrades that would break one pinned to `sysops: "<0.2"`, and
exits 4 when an installed plugin does not fit the base image's Python.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from sysops import __version__
from sysops.settings import Settings

from tests.integration.conftest import Sysops, installation_containers, plugin_code, write_plugin

pytestmark = pytest.mark.integration


def _images(engine: docker.DockerClient, sysops: Sysops, plugin: str) -> list[str]:
    filters = {"label": [f"sysops.installation={sysops.installation_id}", f"sysops.plugin={plugin}"]}
    return [image.id for image in engine.images.list(all=True, filters=filters)]


def _refused(engine: docker.DockerClient, sysops: Sysops, plugin_dir: Path, name: str, line: str) -> None:
    result = sysops.run("plugin", "up", str(plugin_dir))
    assert result.returncode == 4, result.stderr
    errors = [entry for entry in result.stderr.splitlines() if entry.startswith("error: ")]
    assert len(errors) == 1 and line in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert f"starting {name}" not in result.stderr  # refused before any container was started
    assert installation_containers(engine, sysops.installation_id) == []
    assert _images(engine, sysops, name) == []


def test_python_range_refused_before_any_container_starts(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    plugin = write_plugin(
        tmp_path / "oldpy", name="oldpy", code=plugin_code("oldpy"), manifest_extra='compatibility: {python: "<3.0"}\n'
    )
    _refused(
        engine,
        fresh_sysops,
        plugin,
        "oldpy",
        f"{plugin}/plugin.yaml: key 'compatibility.python': plugin oldpy 1.0.0 needs Python <3.0, this is 3.",
    )


def test_sysops_range_refused_before_any_container_starts(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    plugin = write_plugin(
        tmp_path / "future",
        name="future",
        code=plugin_code("future"),
        manifest_extra="compatibility: {sysops: '>=99'}\n",
    )
    _refused(
        engine,
        fresh_sysops,
        plugin,
        "future",
        f"key 'compatibility.sysops': plugin future 1.0.0 needs sysops >=99, this is {__version__}",
    )


@pytest.fixture
def newer_python_base(engine: docker.DockerClient) -> Iterator[str]:
    """The base image relabelled as if its Python were 3.13.0 (a tag of this test's own), removed afterwards."""
    tag = f"sysops-test/base-py313:{uuid.uuid4().hex[:8]}"
    dockerfile = f"FROM {Settings().base_image}\nLABEL sysops.python=3.13.0\n"
    engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, network_mode="none")
    yield tag
    with contextlib.suppress(docker.errors.NotFound):
        engine.images.remove(tag, force=True)


def test_doctor_lists_running_plugins_and_what_an_upgrade_breaks(
    fresh_sysops: Sysops, tmp_path: Path, newer_python_base: str
) -> None:
    pinned = write_plugin(
        tmp_path / "pinned",
        name="pinned",
        code=plugin_code("pinned", command="pinned-ping"),
        manifest_extra='compatibility: {sysops: "<0.2", python: ">=3.11,<3.13"}\n',
    )
    loose = write_plugin(tmp_path / "loose", name="loose", code=plugin_code("loose", command="loose-ping"))
    fresh_sysops.ok("plugin", "up", str(pinned))
    fresh_sysops.ok("plugin", "up", str(loose))

    report = json.loads(fresh_sysops.ok("plugin", "doctor", "-o", "json"))
    assert report["sysops"] == __version__ and report["python"].startswith("3.") and report["protocol"]
    rows = {row["name"]: row for row in report["plugins"]}
    assert rows["pinned"]["where"] == "running"
    assert (rows["pinned"]["sysops"], rows["pinned"]["python"], rows["pinned"]["sdk"]) == ("ok", "ok", "ok")
    assert rows["pinned"]["breaks_on_upgrade"] == ["sysops 0.2", "sysops 1.0"]
    assert rows["loose"]["breaks_on_upgrade"] == []

    text = fresh_sysops.ok("plugin", "doctor")
    pinned_line = next(line for line in text.splitlines() if line.startswith("pinned "))
    assert "running" in pinned_line and "sysops 0.2, sysops 1.0" in pinned_line

    # Against a base image whose Python is 3.13, the pinned plugin no longer fits: exit 4, the cell says why.
    result = fresh_sysops.run("plugin", "doctor", "-o", "json", env={"SYSOPS_BASE_IMAGE": newer_python_base})
    assert result.returncode == 4, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["plugins"]}
    assert rows["pinned"]["python"] == "needs >=3.11,<3.13 (is 3.13.0)"
    assert rows["loose"]["python"] == "ok"
    assert "1 installed plugin(s) do not fit" in result.stderr
