"""core/client.py: a plugin client checks its socket's owner in full again only when the socket file changed.

The full check (check_socket_owner: three lstat calls) runs before the first token is sent and whenever the file
at the socket's path is not the one it passed for; the same file needs one lstat. A file put in its place (an
impostor of another uid) is refused as before.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sysops.core import client as client_module
from sysops.core.client import PluginClient
from sysops.errors import PluginUnavailableError
from sysops.private_paths import ensure_private_dir

NOBODY = 65534


def _listen(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    return listener


@pytest.fixture
def full_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths check_socket_owner ran for."""
    checked: list[str] = []
    check = client_module.check_socket_owner

    def counting(path: str, plugin: str) -> object:
        checked.append(path)
        return check(path, plugin)

    monkeypatch.setattr(client_module, "check_socket_owner", counting)
    return checked


@pytest.fixture
def plugin_socket(tmp_path: Path) -> Iterator[Path]:
    path = ensure_private_dir(tmp_path / "run") / "plugin.sock"
    listener = _listen(path)
    yield path
    listener.close()


def test_the_same_socket_is_checked_in_full_once(plugin_socket: Path, full_checks: list[str]) -> None:
    with PluginClient(f"unix://{plugin_socket}", "hello", "token") as client:
        for _ in range(5):
            assert ("authorization", "Bearer token") in client.metadata
    assert full_checks == [str(plugin_socket)]


def test_a_socket_put_in_its_place_is_checked_again(plugin_socket: Path, full_checks: list[str]) -> None:
    with PluginClient(f"unix://{plugin_socket}", "hello", "token") as client:
        assert client.metadata
        plugin_socket.unlink()
        again = _listen(plugin_socket)  # ours again: passes, after a full check
        try:
            assert client.metadata
            assert client.metadata
        finally:
            again.close()
    assert full_checks == [str(plugin_socket)] * 2


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_an_impostor_put_in_its_place_is_refused(plugin_socket: Path) -> None:
    with PluginClient(f"unix://{plugin_socket}", "hello", "token") as client:
        assert client.metadata
        plugin_socket.unlink()
        impostor = _listen(plugin_socket)
        os.chown(plugin_socket, NOBODY, NOBODY)
        try:
            with pytest.raises(PluginUnavailableError, match=f"refusing to send its token to {plugin_socket}"):
                client.metadata  # noqa: B018 - the property checks
        finally:
            impostor.close()
