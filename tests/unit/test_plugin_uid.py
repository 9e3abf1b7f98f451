"""Every plugin runs as its own uid (issue 8 item 2), and the client trusts that uid as its socket's owner.

The uid comes from (installation, plugin): replicas and revisions of one plugin share it, two plugins or
two installations do not, and it is never a login user's, root's or the image's shared 10001.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from sysops.core.client import check_socket_owner
from sysops.errors import PluginUnavailableError
from sysops.private_paths import ensure_private_dir
from sysops.runtime.base import PLUGIN_UID, is_plugin_uid, plugin_uid
from sysops.runtime.socket_dirs import socket_tmpfs_options

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def test_uid_is_stable_per_plugin_and_installation() -> None:
    assert plugin_uid("0123456789ab", "hello") == plugin_uid("0123456789ab", "hello")


def test_uids_differ_between_plugins_and_installations() -> None:
    uids = {plugin_uid(installation, name) for installation in ("aaaaaaaaaaaa", "bbbbbbbbbbbb") for name in "abcdefgh"}
    assert len(uids) == 16


def test_uid_is_far_from_users_root_and_the_image_uid() -> None:
    for name in ("hello", "a", "x" * 63):
        uid = plugin_uid("0123456789ab", name)
        assert is_plugin_uid(uid) and uid >= 0x10000000 and uid < 2**31 - 1
    assert not is_plugin_uid(0) and not is_plugin_uid(PLUGIN_UID) and not is_plugin_uid(65534)


def test_socket_tmpfs_is_small_private_and_inert() -> None:
    options = socket_tmpfs_options(0x12345678).split(",")
    assert {"nosuid", "nodev", "noexec", "mode=0700", f"uid={0x12345678}", f"gid={0x12345678}", "size=1m"} <= set(
        options
    )


def _socket(path: Path, uid: int) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chown(path, uid, uid)
    return listener


@needs_root
def test_socket_of_the_plugin_uid_in_its_directory_inside_ours_is_trusted(tmp_path: Path) -> None:
    uid = plugin_uid("0123456789ab", "hello")
    directory = ensure_private_dir(ensure_private_dir(tmp_path / "run") / "instance")
    os.chown(directory, uid, uid)
    with _socket(directory / "plugin.sock", uid):
        check_socket_owner(str(directory / "plugin.sock"), "hello")


@needs_root
def test_plugin_uid_directory_outside_a_private_directory_is_refused(tmp_path: Path) -> None:
    uid = plugin_uid("0123456789ab", "hello")
    parent = tmp_path / "open"
    parent.mkdir()
    os.chmod(parent, 0o777)
    directory = parent / "instance"
    directory.mkdir(mode=0o700)
    os.chown(directory, uid, uid)
    with (
        _socket(directory / "plugin.sock", uid),
        pytest.raises(PluginUnavailableError, match=f"owned by uid {uid}, not by the plugin"),
    ):
        check_socket_owner(str(directory / "plugin.sock"), "hello")


@needs_root
def test_a_local_users_directory_inside_ours_is_refused(tmp_path: Path) -> None:
    directory = ensure_private_dir(ensure_private_dir(tmp_path / "run") / "instance")
    os.chown(directory, 1000, 1000)
    with _socket(directory / "plugin.sock", 1000), pytest.raises(PluginUnavailableError, match="uid 1000"):
        check_socket_owner(str(directory / "plugin.sock"), "hello")
