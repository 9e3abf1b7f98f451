"""A hostile review of the build-context and /data hardening (issue 8, items 2 and 3).

The build refused links that leave the plugin directory when it listed the directory, but read the files
later through the directory's path: a local user who owns the plugin directory could swap it (or a file
in it) between the listing and the write, and a host file the user cannot read reached the image, or the
requirement list (echoed in the error when pip failed). These tests make that race deterministic by
swapping inside the window, and check the other ways a host file could ride along (hard links).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sysops.core.manifest import load_manifest
from sysops.errors import ExitCode, PluginDefinitionError, RuntimeOperationError
from sysops.imaging import image
from sysops.imaging.image import make_context
from sysops.runtime.docker import data_filesystems

SECRET = "host secret the plugin's owner cannot read"


def _plugin(directory: Path) -> Path:
    (directory / "demo_plugin").mkdir(parents=True)
    (directory / "demo_plugin" / "__init__.py").write_text("")
    (directory / "demo_plugin" / "plugin.py").write_text("VALUE = 1\n")
    (directory / "plugin.yaml").write_text("name: demo\nversion: '1.0.0'\nentrypoint: demo_plugin.plugin:P\n")
    return directory


def _shipped_text(plugin: Path, cache: Path) -> str:
    """Everything the context of `plugin` carries, as text (or the one-line refusal)."""
    try:
        manifest = load_manifest(plugin)
        with make_context(plugin, manifest, "sha256:base", cache) as context, tarfile.open(context.tar_path) as tar:
            files = [tar.extractfile(member) for member in tar.getmembers() if member.isfile()]
            return "".join(handle.read().decode(errors="replace") for handle in files if handle)
    except PluginDefinitionError as exc:
        assert exc.exit_code == ExitCode.INVALID_PLUGIN
        assert "\n" not in str(exc)
        return f"refused: {exc}"


def _directory_for_a_link(plugin: Path, host: Path) -> None:
    """The plugin directory becomes a link to a host directory with the same names (notes.txt the secret)."""
    shutil.copytree(plugin, host.parent / "host-dir")
    (host.parent / "host-dir" / "notes.txt").write_bytes(host.read_bytes())
    plugin.rename(plugin.with_name("moved"))
    plugin.symlink_to(host.parent / "host-dir")


def _file_for_a_hard_link(plugin: Path, host: Path) -> None:
    (plugin / "notes.txt").unlink()
    os.link(host, plugin / "notes.txt")


def _requirements_for_a_link(plugin: Path, host: Path) -> None:
    (plugin / "requirements.txt").unlink()
    (plugin / "requirements.txt").symlink_to(host)


@pytest.mark.parametrize("swap", [_directory_for_a_link, _file_for_a_hard_link, _requirements_for_a_link])
def test_a_swap_between_the_listing_and_the_write_ships_no_host_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: Callable[[Path, Path], None]
) -> None:
    """The race made deterministic: `swap` runs after the sources are checked, before anything is read."""
    plugin = _plugin(tmp_path / "plugin")
    (plugin / "notes.txt").write_text("the user's own notes\n")
    (plugin / "requirements.txt").write_text("")
    host = tmp_path / "host-secret"
    host.write_text(SECRET.replace(" ", "-") + "\n")
    check_sources = image.check_sources

    def check_then_swap(*args: Any) -> None:
        check_sources(*args)
        swap(plugin, host)

    monkeypatch.setattr(image, "check_sources", check_then_swap)
    real_prepare_wheels = image.prepare_wheels

    def no_secret_requirements(requirements: list[str], cache: Path) -> Path | None:
        assert not requirements, f"read through the link: {requirements}"
        return real_prepare_wheels(requirements, cache)

    monkeypatch.setattr(image, "prepare_wheels", no_secret_requirements)
    shipped = _shipped_text(plugin, tmp_path / "cache")
    assert SECRET.replace(" ", "-") not in shipped
    assert shipped.startswith("refused: ")


def test_a_hard_link_to_a_file_of_another_owner_is_refused(tmp_path: Path) -> None:
    """Root runs the build: a hard link in a user's plugin to a file only root can read (possible where
    fs.protected_hardlinks is 0) must not put that file in the image."""
    plugin = _plugin(tmp_path / "plugin")
    os.chown(plugin, 12345, 12345)
    host = tmp_path / "shadow"
    host.write_text(SECRET)
    host.chmod(0o600)
    os.link(host, plugin / "shadow")
    shipped = _shipped_text(plugin, tmp_path / "cache")
    assert SECRET not in shipped
    assert shipped.startswith("refused: ") and "hard link" in shipped and str(plugin / "shadow") in shipped


def test_hard_links_of_the_plugin_owner_still_ship(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path / "plugin")
    (plugin / "a.txt").write_text("shared content\n")
    os.link(plugin / "a.txt", plugin / "b.txt")
    shipped = _shipped_text(plugin, tmp_path / "cache")
    assert shipped.count("shared content") == 2


def test_the_data_image_is_private_from_its_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    modes: list[int] = []

    def record_mode(command: list[str], plugin: str, what: str, ok: tuple[int, ...] = (0,)) -> str:
        modes.append(stat.S_IMODE(os.stat(command[-1]).st_mode))
        return ""

    monkeypatch.setattr(data_filesystems, "_run", record_mode)
    old_umask = os.umask(0o022)
    try:
        data_filesystems._create(tmp_path / "data.ext4", 1 << 20, 4242, "demo")
    finally:
        os.umask(old_umask)
    assert modes == [0o600]
    assert stat.S_IMODE((tmp_path / "data.ext4").stat().st_mode) == 0o600


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB filesystem of its own, like a SYSOPS_HOME on a nearly full disk."""
    if os.geteuid() != 0:
        pytest.skip("mounting a filesystem needs root")
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "sysops-review", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_a_data_image_that_does_not_fit_is_refused_not_overcommitted(small_filesystem: Path) -> None:
    """A sparse 64 MiB image on a 24 MiB filesystem let the plugin fill the filesystem of SYSOPS_HOME (state.db
    then failed with a disk I/O error in every command) and abort its own journal."""
    directory = small_filesystem / "data" / "demo"
    with pytest.raises(RuntimeOperationError) as caught:
        data_filesystems.ensure_data_filesystem(directory, 64 << 20, 4242, "demo")
    message = str(caught.value)
    assert "\n" not in message and "demo" in message and "64 MiB" in message and "limits.data_mb" in message
    assert not list(directory.iterdir()) or [path.name for path in directory.iterdir()] == ["mnt"]
    assert os.statvfs(small_filesystem).f_bfree * os.statvfs(small_filesystem).f_frsize > 20 << 20


def test_a_data_image_that_fits_holds_its_space_from_the_start(small_filesystem: Path) -> None:
    directory = small_filesystem / "data" / "demo"
    mountpoint = data_filesystems.ensure_data_filesystem(directory, 16 << 20, 4242, "demo")
    try:
        image = directory / data_filesystems.DATA_IMAGE
        assert image.stat().st_blocks * 512 >= 16 << 20, "the image is sparse: the plugin could fill the host"
        root = mountpoint.stat()
        assert (root.st_uid, stat.S_IMODE(root.st_mode)) == (4242, 0o700), "mkfs leaves the root 0755"
        with pytest.raises(RuntimeOperationError, match=r"limits\.data_mb"):
            data_filesystems.ensure_data_filesystem(directory, 64 << 20, 4242, "demo")
        assert image.stat().st_size == 16 << 20
    finally:
        data_filesystems.unmount_data_filesystem(str(mountpoint))


@pytest.mark.parametrize("name", [".gitignore", ".dockerignore"])
def test_an_ignore_file_with_too_many_patterns_is_refused_at_once(tmp_path: Path, name: str) -> None:
    """1 MiB of patterns took 8 s to load and 14 ms per shipped file (10,000 files: over 2 minutes)."""
    plugin = _plugin(tmp_path / "plugin")
    lines = [f"**/a{index}*b/**/c{index}?[a-z]*" for index in range(30000)]
    (plugin / name).write_text("# generated\n" + "\n".join(lines)[:1_000_000])
    started = time.monotonic()
    shipped = _shipped_text(plugin, tmp_path / "cache")
    assert time.monotonic() - started < 2
    assert shipped.startswith("refused: ") and f"{plugin / name}: " in shipped and "more than 2000" in shipped


def test_an_ignore_file_of_ordinary_size_still_applies(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path / "plugin")
    (plugin / "secret.env").write_text("TOKEN=x\n")
    (plugin / ".gitignore").write_text("\n".join(f"pattern{index}/" for index in range(1999)) + "\n*.env\n")
    assert "TOKEN" not in _shipped_text(plugin, tmp_path / "cache")


@pytest.mark.parametrize("name", [".gitignore", ".dockerignore"])
def test_an_ignore_file_that_is_a_directory_is_refused_in_one_line(tmp_path: Path, name: str) -> None:
    """A directory named .gitignore was an internal error (IsADirectoryError)."""
    plugin = _plugin(tmp_path / "plugin")
    (plugin / name).mkdir()
    shipped = _shipped_text(plugin, tmp_path / "cache")
    assert shipped.startswith("refused: ") and f"{plugin / name}: not a regular file" in shipped
