"""The build context: what of a plugin directory ships, how links are handled, and that files stream.

Issue 8, item 3: `ln -s /etc/shadow x` in a plugin put the host's shadow file in the image, `.dockerignore`
and `.gitignore` were not honoured, and a 1 GB sparse file took 2.1 GB of memory. Item 18: a PEP 440
version that is not a Docker tag (`1.0.0+local.1`) failed the build.
"""

from __future__ import annotations

import os
import re
import socket
import tarfile
import time
import tracemalloc
from pathlib import Path, PurePosixPath

import pytest
from sysops.core.manifest import load_manifest
from sysops.errors import ExitCode, ManifestError, PluginDefinitionError
from sysops.imaging.context import IgnoreRules
from sysops.imaging.image import image_tag, make_context

_DOCKER_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def _plugin(directory: Path, version: str = "1.0.0") -> Path:
    (directory / "demo_plugin").mkdir(parents=True)
    (directory / "demo_plugin" / "__init__.py").write_text("")
    (directory / "demo_plugin" / "plugin.py").write_text("VALUE = 1\n")
    (directory / "plugin.yaml").write_text(f"name: demo\nversion: '{version}'\nentrypoint: demo_plugin.plugin:P\n")
    return directory


def _members(plugin_dir: Path, cache_dir: Path) -> dict[str, tarfile.TarInfo]:
    manifest = load_manifest(plugin_dir)
    with make_context(plugin_dir, manifest, "sha256:base", cache_dir) as context, tarfile.open(context.tar_path) as tar:
        return {member.name: member for member in tar.getmembers()}


def _refused(plugin_dir: Path, cache_dir: Path) -> str:
    with pytest.raises(PluginDefinitionError) as caught:
        make_context(plugin_dir, load_manifest(plugin_dir), "sha256:base", cache_dir)
    assert caught.value.exit_code == ExitCode.INVALID_PLUGIN
    message = str(caught.value)
    assert "\n" not in message
    assert not list((cache_dir / "contexts").glob("*")), "a refused build left a context behind"
    return message


@pytest.mark.parametrize("target", ["/etc/shadow", "../outside", "demo_plugin/../../outside", "/"])
def test_a_link_leaving_the_plugin_is_refused_in_one_line(tmp_path: Path, target: str) -> None:
    plugin = _plugin(tmp_path / "plugin")
    (tmp_path / "outside").write_text("host secret")
    (plugin / "x").symlink_to(target)
    message = _refused(plugin, tmp_path / "cache")
    assert f"{plugin / 'x'}: symbolic link to '{target}' leads outside the plugin directory" in message
    assert ".dockerignore" in message


def test_a_link_to_a_link_out_is_refused(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path / "plugin")
    (plugin / "hop").symlink_to("/etc")
    (plugin / "demo_plugin" / "x").symlink_to("../hop/passwd")
    message = _refused(plugin, tmp_path / "cache")
    assert "leads outside the plugin directory" in message


def test_dangling_links_fifos_and_sockets_are_refused(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path / "plugin")
    (plugin / "dangling").symlink_to("missing")
    assert "dangling: symbolic link to 'missing' points to nothing" in _refused(plugin, tmp_path / "cache")
    (plugin / "dangling").unlink()
    os.mkfifo(plugin / "pipe")
    assert "pipe: a FIFO cannot be shipped" in _refused(plugin, tmp_path / "cache")
    (plugin / "pipe").unlink()
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(plugin / "sock"))
        assert "sock: a socket cannot be shipped" in _refused(plugin, tmp_path / "cache")


def test_links_that_stay_inside_are_kept_as_links(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path / "plugin")
    (plugin / "alias.py").symlink_to("demo_plugin/plugin.py")
    (plugin / "demo_plugin" / "up").symlink_to("..")
    members = _members(plugin, tmp_path / "cache")
    assert members["plugin/alias.py"].issym() and members["plugin/alias.py"].linkname == "demo_plugin/plugin.py"
    assert members["plugin/demo_plugin/up"].issym() and members["plugin/demo_plugin/up"].linkname == ".."
    assert members["plugin/demo_plugin/plugin.py"].isfile()


def test_ignored_links_and_specials_are_skipped_not_refused(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path / "plugin")
    (plugin / ".venv" / "bin").mkdir(parents=True)
    (plugin / ".venv" / "bin" / "python").symlink_to("/usr/bin/python3")
    (plugin / "secret").symlink_to("/etc/shadow")
    os.mkfifo(plugin / "pipe")
    (plugin / ".dockerignore").write_text("secret\npipe\n")
    members = _members(plugin, tmp_path / "cache")
    assert not [name for name in members if "venv" in name or "secret" in name or "pipe" in name]


def test_dockerignore_and_gitignore_files_never_reach_the_context(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path / "plugin")
    for name in ("secret.env", "keep.log", "debug.log", "data/big.bin", "data/small.txt", "sub/secret.env", "b/x"):
        (plugin / name).parent.mkdir(parents=True, exist_ok=True)
        (plugin / name).write_text(name)
    # .dockerignore patterns are anchored at the plugin's root, as Docker reads them; `!` re-includes.
    (plugin / ".dockerignore").write_text("# comment\n/secret.env\ndata/*.bin\n")
    (plugin / ".gitignore").write_text("*.log\n!keep.log\nb/\n")
    names = set(_members(plugin, tmp_path / "cache"))
    assert {"plugin/keep.log", "plugin/data/small.txt", "plugin/sub/secret.env", "plugin/.gitignore"} <= names
    assert not names & {"plugin/secret.env", "plugin/debug.log", "plugin/data/big.bin", "plugin/b", "plugin/b/x"}


def test_the_manifest_ships_even_when_an_ignore_file_lists_it(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path / "plugin")
    (plugin / ".dockerignore").write_text("*\n!demo_plugin\n")
    names = set(_members(plugin, tmp_path / "cache"))
    assert {"plugin/plugin.yaml", "plugin/demo_plugin/plugin.py"} <= names


def test_an_ignored_entrypoint_is_named(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path / "plugin")
    (plugin / ".gitignore").write_text("demo_plugin/\n")
    assert "entrypoint 'demo_plugin.plugin:P' not found" in _refused(plugin, tmp_path / "cache")


def test_an_ignore_file_that_is_a_link_is_not_followed(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path / "plugin")
    (plugin / ".gitignore").symlink_to("/etc/passwd")
    assert ".gitignore: cannot read" in _refused(plugin, tmp_path / "cache")


def test_the_watcher_ignores_what_the_build_ignores(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path / "plugin")
    (plugin / ".dockerignore").write_text("notes/\n")
    (plugin / ".gitignore").write_text("*.csv\n")
    rules = IgnoreRules.load(plugin)
    for ignored in ("notes/a.md", "x/y.csv", "__pycache__/m.pyc", "demo_plugin/.#plugin.py", "a.swp"):
        assert rules.ignores(PurePosixPath(ignored)), ignored
    for relevant in ("demo_plugin/plugin.py", "plugin.yaml", ".gitignore", "x/notes/a.md"):
        assert not rules.ignores(PurePosixPath(relevant)), relevant


def test_a_failed_write_leaves_no_context_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = _plugin(tmp_path / "plugin")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("sysops.imaging.context.ContextArchive.add_plugin_tree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_context(plugin, load_manifest(plugin), "sha256:base", tmp_path / "cache")
    assert not list((tmp_path / "cache" / "contexts").iterdir())


def test_a_context_is_removed_after_use_and_is_deterministic(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path / "plugin")
    manifest = load_manifest(plugin)
    with make_context(plugin, manifest, "sha256:base", tmp_path / "cache") as first:
        assert first.tar_path.is_file()
        assert (first.tar_path.parent.stat().st_mode & 0o777) == 0o700
    assert not first.tar_path.parent.exists()
    with make_context(plugin, manifest, "sha256:base", tmp_path / "cache") as second:
        assert second.fingerprint == first.fingerprint
    with make_context(plugin, manifest, "sha256:other", tmp_path / "cache") as third:
        assert third.fingerprint != first.fingerprint


@pytest.mark.parametrize("name", ["data.bin", "generated.py"])  # a huge .py is shipped, not parsed whole
def test_a_large_file_streams_with_bounded_memory(tmp_path: Path, name: str) -> None:
    size = 200 << 20
    plugin = _plugin(tmp_path / "plugin")
    with open(plugin / name, "wb") as sparse:
        sparse.truncate(size)
    manifest = load_manifest(plugin)
    tracemalloc.start()
    try:
        with make_context(plugin, manifest, "sha256:base", tmp_path / "cache") as context:
            _, peak = tracemalloc.get_traced_memory()
            assert context.tar_path.stat().st_size > size
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"building the context of a {size >> 20} MiB file peaked at {peak >> 20} MiB"


@pytest.mark.parametrize(
    ("version", "spelt"),
    [
        ("1.0.0", "1.0.0"),
        ("1.0.0+local.1", "1.0.0_local.1"),
        ("1.0.0rc1", "1.0.0rc1"),
        ("1.0.0RC1", "1.0.0rc1"),
        ("1!2.0", "1-epoch-2.0"),
        ("1.0-1", "1.0.post1"),
        ("2.0.dev3+Ubuntu-2", "2.0.dev3_ubuntu.2"),
    ],
)
def test_pep440_versions_become_docker_tags(version: str, spelt: str) -> None:
    reference = image_tag("sysops-plugins/abc-demo", version, "0123456789abcdef")
    assert reference == f"sysops-plugins/abc-demo:{spelt}-0123456789ab"
    assert _DOCKER_TAG.fullmatch(reference.rsplit(":", 1)[1])


def test_distinct_versions_get_distinct_tags_and_long_ones_fit() -> None:
    versions = ["1!1.0", "1.0", "1.1", "1.0+1", "1.0.1", "1.0.post1", "1.0+post1", "11.0", "1.0+1.1", "1.0.1+1"]
    tags = {image_tag("r", version, "f" * 64) for version in versions}
    assert len(tags) == len(versions)
    long_version = "1." + ".".join(["1234567"] * 7) + "+" + ".".join(["abcdefgh"] * 6)
    tag = image_tag("r", long_version, "f" * 64).split(":", 1)[1]
    assert _DOCKER_TAG.fullmatch(tag) and len(tag) <= 128


def test_a_version_that_is_not_pep440_is_refused_naming_the_key(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path / "plugin", version="1.0/../x")
    with pytest.raises(ManifestError) as caught:
        load_manifest(plugin)
    assert caught.value.exit_code == ExitCode.INVALID_PLUGIN
    assert str(caught.value).startswith(f"{plugin / 'plugin.yaml'}: key 'version':")


def test_contexts_left_by_a_killed_sysops_are_swept(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path / "plugin")
    contexts = tmp_path / "cache" / "contexts"
    stale, recent = contexts / "context-killed", contexts / "context-running"
    for directory in (stale, recent):
        directory.mkdir(parents=True)
        (directory / "context.tar").write_bytes(b"x")
    day_ago = time.time() - 25 * 3600
    os.utime(stale, (day_ago, day_ago))
    with make_context(plugin, load_manifest(plugin), "sha256:base", tmp_path / "cache"):
        pass
    assert not stale.exists() and recent.exists()
