"""Development mode's code snapshots (imaging/dev_code.py) and its image context (make_context(code=False)):
content-addressed, immutable, private, derived from the plugin and fingerprint alone, pruned and purged."""

from __future__ import annotations

import os
import stat
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sysops.core.manifest import load_manifest
from sysops.imaging.context import IgnoreRules, plugin_entries
from sysops.imaging.dev_code import code_dir, code_root, is_dev_fingerprint, prune_code, remove_code, snapshot_code
from sysops.imaging.image import make_context
from sysops.imaging.tests_copy import copy_tests

IMAGE = "0" * 64


def _plugin(directory: Path, value: int = 1) -> Path:
    (directory / "demo_plugin").mkdir(parents=True, exist_ok=True)
    (directory / "demo_plugin" / "__init__.py").write_text("")
    (directory / "demo_plugin" / "plugin.py").write_text(f"VALUE = {value}\n")
    (directory / "plugin.yaml").write_text("name: demo\nversion: '1.0.0'\nentrypoint: demo_plugin.plugin:P\n")
    return directory


def _snapshot(home: Path, plugin: Path, image: str = IMAGE) -> str:
    return snapshot_code(home, "demo", plugin, plugin_entries(plugin, IgnoreRules.load(plugin)), image)


def test_a_snapshot_is_named_by_its_content_and_reused(tmp_path: Path) -> None:
    home, plugin = tmp_path / "home", _plugin(tmp_path / "plugin")
    first = _snapshot(home, plugin)
    assert is_dev_fingerprint(first)
    assert _snapshot(home, plugin) == first
    other_image = _snapshot(home, plugin, "1" * 64)
    assert other_image != first, "another image, another fingerprint"
    _plugin(plugin, value=2)
    second = _snapshot(home, plugin)
    assert second != first
    assert sorted(p.name for p in code_root(home, "demo").iterdir()) == sorted([first, second, other_image])
    directory = code_dir(home, "demo", second)
    assert directory is not None
    assert (directory / "demo_plugin" / "plugin.py").read_text() == "VALUE = 2\n"
    assert (code_dir(home, "demo", first) or Path()).joinpath("demo_plugin", "plugin.py").read_text() == "VALUE = 1\n"


def test_a_snapshot_is_readable_by_the_plugin_and_private_to_its_installation(tmp_path: Path) -> None:
    home, plugin = tmp_path / "home", _plugin(tmp_path / "plugin")
    (plugin / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(plugin / "run.sh", 0o700)
    directory = code_dir(home, "demo", _snapshot(home, plugin))
    assert directory is not None
    assert stat.S_IMODE(os.stat(home / "dev").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(code_root(home, "demo")).st_mode) == 0o711  # the mount's root: passed, not listed
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(directory / "demo_plugin" / "plugin.py").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(directory / "run.sh").st_mode) == 0o755
    assert not [p for p in code_root(home, "demo").iterdir() if p.name.startswith(".staging-")]


@pytest.fixture
def umask_077() -> Iterator[None]:
    """The process's umask is 077 meanwhile: a user's, or another host thread's inside private_umask()."""
    previous = os.umask(0o077)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("umask_077")
def test_a_snapshot_made_under_umask_077_is_still_readable_by_the_plugin(tmp_path: Path) -> None:
    home, plugin = tmp_path / "home", _plugin(tmp_path / "plugin")
    directory = code_dir(home, "demo", _snapshot(home, plugin))
    assert directory is not None
    # a subdirectory made 0700 let the plugin's uid import demo_plugin only as an empty namespace package:
    # "No module named 'demo_plugin.plugin'" (seen once in bench_reload's first development-mode start)
    assert stat.S_IMODE(os.stat(directory / "demo_plugin").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(directory / "demo_plugin" / "plugin.py").st_mode) == 0o644


@pytest.mark.usefixtures("umask_077")
def test_a_tests_copy_made_under_umask_077_is_readable_by_the_plugin(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path / "plugin")
    (plugin / "tests" / "unit").mkdir(parents=True)
    (plugin / "tests" / "unit" / "test_x.py").write_text("def test_x() -> None: ...\n")
    copy = copy_tests(plugin, tmp_path / "work")
    assert stat.S_IMODE(os.stat(copy / "unit").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(copy / "unit" / "test_x.py").st_mode) == 0o644


@pytest.mark.parametrize("fingerprint", ["", "0" * 64, "dev-../../etc", "dev-" + "0" * 63, "dev-" + "A" * 64])
def test_only_a_dev_fingerprint_names_a_snapshot(tmp_path: Path, fingerprint: str) -> None:
    assert code_dir(tmp_path, "demo", fingerprint) is None


def test_prune_removes_only_old_unused_snapshots_and_staging(tmp_path: Path) -> None:
    home, plugin = tmp_path / "home", _plugin(tmp_path / "plugin")
    used = _snapshot(home, plugin)
    _plugin(plugin, value=2)
    unused = _snapshot(home, plugin)
    _plugin(plugin, value=3)
    young = _snapshot(home, plugin)
    staging = code_root(home, "demo") / ".staging-x"
    staging.mkdir()
    old = time.time() - 3600
    for name in (used, unused, staging.name):
        os.utime(code_root(home, "demo") / name, (old, old))
    prune_code(home, "demo", {used, "not-a-dev-fingerprint"})
    assert sorted(p.name for p in code_root(home, "demo").iterdir()) == sorted([used, young])
    remove_code(home, "demo", {young})  # another key's revision runs `young`: it and the directory stay
    assert sorted(p.name for p in code_root(home, "demo").iterdir()) == [young]
    remove_code(home, "demo", set())  # young or not
    assert not code_root(home, "demo").exists()
    remove_code(home, "demo", set())  # nothing left: no error


def test_two_trees_never_share_a_snapshot_by_shifting_bytes_between_files(tmp_path: Path) -> None:
    home = tmp_path / "home"
    one, two = _plugin(tmp_path / "one"), _plugin(tmp_path / "two")
    (one / "a").write_bytes(b"X\0file\0b\0-Y")  # the bytes of `a`=X followed by `b`=Y under a naive hash
    (two / "a").write_bytes(b"X")
    (two / "b").write_bytes(b"Y")
    assert _snapshot(home, one) != _snapshot(home, two)


def test_a_snapshot_made_meanwhile_by_another_up_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, plugin = tmp_path / "home", _plugin(tmp_path / "plugin")
    fingerprint = _snapshot(home, plugin)
    real_rename = os.rename

    def rename_after_the_other_up(source: str | Path, target: str | Path) -> None:
        assert Path(target).is_dir()  # the other `up` won: its snapshot is there
        real_rename(source, target)  # ENOTEMPTY, as when both copied at once

    monkeypatch.setattr(os, "rename", rename_after_the_other_up)
    assert _snapshot(home, plugin) == fingerprint
    assert [p.name for p in code_root(home, "demo").iterdir()] == [fingerprint]


def test_a_development_context_ships_plugin_yaml_only_and_ignores_code_changes(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path / "plugin")
    manifest = load_manifest(plugin)
    with make_context(plugin, manifest, "sha256:base", tmp_path / "cache", code=False) as context:
        first = context.fingerprint
        with tarfile.open(context.tar_path) as tar:
            shipped = sorted(name for name in tar.getnames() if name.startswith("plugin/"))
        assert shipped == ["plugin/plugin.yaml"]
        assert {entry.relative.as_posix() for entry in context.entries} >= {"demo_plugin/plugin.py", "plugin.yaml"}
    _plugin(plugin, value=2)
    with make_context(plugin, manifest, "sha256:base", tmp_path / "cache", code=False) as context:
        assert context.fingerprint == first
    with make_context(plugin, manifest, "sha256:base", tmp_path / "cache") as context:
        assert context.fingerprint != first


def test_dev_mode_is_refused_for_a_server_context_before_anything_is_built(tmp_path: Path) -> None:
    from sysops.cli.contexts import ServerContext
    from sysops.cli.remote import RemoteClient
    from sysops.errors import ExitCode, UsageError

    plugin = _plugin(tmp_path / "plugin")
    client = RemoteClient(ServerContext("prod", "127.0.0.1:1", "token", insecure=True), dev=plugin)
    try:
        with pytest.raises(UsageError) as refused:
            client.up(plugin)
    finally:
        client.close()
    assert refused.value.exit_code == ExitCode.USAGE
    assert "--dev" in str(refused.value) and "'prod'" in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "home").exists()
