"""Plugin images on the real engine: links, ignore files and PEP 440 versions (issue 8, items 3 and 18).

`ln -s /etc/shadow x` in a plugin put the host's shadow file in its image; `.dockerignore`d and
`.gitignore`d files were shipped; a version such as `1.0.0+local.1` failed the build with exit 5.
What an image holds is read from a container of that image (removed with the installation).
"""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest

from tests.integration.conftest import Sysops, installation_containers, plugin_code, write_plugin

pytestmark = pytest.mark.integration

_LIST_PLUGIN = """
import json, os
entries = {}
for root, dirs, files in os.walk("/plugin"):
    for name in dirs + files:
        path = os.path.join(root, name)
        entries[os.path.relpath(path, "/plugin")] = os.readlink(path) if os.path.islink(path) else ""
print(json.dumps(entries))
"""


def _images(engine: docker.DockerClient, sysops: Sysops, plugin: str) -> list[docker.models.images.Image]:
    labels = [f"sysops.installation={sysops.installation_id}", f"sysops.plugin={plugin}"]
    return list(engine.images.list(filters={"label": labels}))


def _image_files(engine: docker.DockerClient, image: docker.models.images.Image) -> dict[str, str]:
    """Every path under /plugin in the image, mapped to its link target ('' for a file or directory)."""
    output = engine.containers.run(
        image.id, entrypoint=["/opt/sysops/bin/python", "-c", _LIST_PLUGIN], network_mode="none", remove=True
    )
    result: dict[str, str] = json.loads(output)
    return result


def test_a_link_to_a_host_file_is_refused_and_nothing_is_built(
    sysops: Sysops, engine: docker.DockerClient, tmp_path: Path
) -> None:
    plugin_dir = write_plugin(tmp_path / "shadow", name="shadow", code=plugin_code("shadow"))
    (plugin_dir / "x").symlink_to("/etc/shadow")
    result = sysops.run("plugin", "up", str(plugin_dir))
    assert result.returncode == 4, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {plugin_dir / 'x'}: symbolic link to '/etc/shadow' leads outside the plugin directory; "
        "copy what it points to into the plugin directory, or remove it, or list it in the plugin's .dockerignore"
    ]
    assert "Traceback" not in result.stderr
    assert not _images(engine, sysops, "shadow")
    assert not [
        c for c in installation_containers(engine, sysops.installation_id) if c.labels.get("sysops.plugin") == "shadow"
    ]
    assert not list((sysops.home / "cache" / "contexts").glob("*"))


def test_ignored_files_never_reach_the_image_and_inside_links_stay_links(
    sysops: Sysops, engine: docker.DockerClient, tmp_path: Path
) -> None:
    plugin_dir = write_plugin(tmp_path / "shipped", name="shipped", code=plugin_code("shipped"))
    (plugin_dir / "credentials.env").write_text("TOKEN=not-for-the-image\n")
    (plugin_dir / "debug.log").write_text("local noise\n")
    (plugin_dir / "notes.md").write_text("shipped\n")
    (plugin_dir / ".dockerignore").write_text("credentials.env\n")
    (plugin_dir / ".gitignore").write_text("*.log\n")
    (plugin_dir / "alias.py").symlink_to("shipped_plugin/plugin.py")
    sysops.ok("plugin", "up", str(plugin_dir))
    assert sysops.ok("ping") == "pong\n"
    (image,) = _images(engine, sysops, "shipped")
    files = _image_files(engine, image)
    assert files["alias.py"] == "shipped_plugin/plugin.py"
    assert files["notes.md"] == "" and files["shipped_plugin/plugin.py"] == ""
    assert "credentials.env" not in files and "debug.log" not in files


def test_a_local_pep440_version_builds_and_keeps_its_exact_label(
    sysops: Sysops, engine: docker.DockerClient, tmp_path: Path
) -> None:
    plugin_dir = write_plugin(tmp_path / "local", name="local", code=plugin_code("local", command="local-ping"))
    manifest = plugin_dir / "plugin.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: 1.0.0+local.1"))
    result = sysops.run("plugin", "up", str(plugin_dir))
    assert result.returncode == 0, result.stderr
    assert sysops.ok("local-ping") == "pong\n"
    (image,) = _images(engine, sysops, "local")
    assert image.labels["sysops.version"] == "1.0.0+local.1"
    assert [tag.split(":", 1)[1][:14] for tag in image.tags] == ["1.0.0_local.1-"]
