"""Other local users can neither read sysops secrets nor stand in for a plugin socket (issue item 1)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import patch

import pytest
from sysops import settings as settings_module
from sysops.cli import contexts
from sysops.core import client as client_module
from sysops.core.client import PluginClient
from sysops.core.orchestrator import Orchestrator
from sysops.errors import PluginUnavailableError, UsageError
from sysops.imaging import image
from sysops.imaging.context import ContextArchive
from sysops.private_paths import ensure_private_dir
from sysops.runtime.fake import FakeDriver
from sysops.settings import Settings
from sysops.store import Store
from sysops_sdk._server import PluginRuntime, PluginServer

from tests.unit.conftest import EchoV1

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0o000)
    yield
    os.umask(previous)


def test_state_db_and_wal_are_private_from_creation(tmp_path: Path, loose_umask: None) -> None:
    home = tmp_path / "home"
    store = Store(home / "state.db")
    store.save_plugin("hello", "/src", "docker", {})
    names = sorted(p.name for p in home.iterdir())
    assert {"state.db", "state.db-wal", "state.db-shm"} <= set(names)
    assert mode(home) == 0o700
    assert all(mode(home / name) == 0o600 for name in names if name.startswith("state.db"))
    store.close()


def test_files_of_an_older_sysops_are_tightened(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    (home / "state.db").touch(mode=0o644)
    os.chmod(home / "state.db", 0o644)
    Store(home / "state.db").db.close()
    assert mode(home) == 0o700 and mode(home / "state.db") == 0o600


def test_run_dir_under_a_short_home_is_private(loose_umask: None) -> None:
    short = Path(tempfile.mkdtemp(prefix="sysops-perm-", dir="/tmp"))
    try:
        settings = Settings(home=short / "home")
        run_dir = settings.ensure_run_dir()
        assert run_dir == settings.home / "run"
        assert [mode(p) for p in (settings.home, run_dir)] == [0o700, 0o700]
    finally:
        shutil.rmtree(short)


@pytest.fixture
def long_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """An installation whose run dir falls back to `<base>/sysops-run-<uid>` (base is a tmp dir here)."""
    monkeypatch.setattr(settings_module, "FALLBACK_RUN_BASE", tmp_path / "tmp")
    (tmp_path / "tmp").mkdir(mode=0o1777)
    settings = Settings(home=tmp_path / ("h" * 80))
    assert settings.run_dir.parent == tmp_path / "tmp" / f"sysops-run-{os.geteuid()}"
    return settings


def test_tmp_fallback_is_created_private(long_home: Settings, loose_umask: None) -> None:
    run_dir = long_home.ensure_run_dir()
    assert mode(run_dir.parent) == 0o700 and mode(run_dir) == 0o700


@needs_root
def test_tmp_fallback_owned_by_someone_else_is_refused(long_home: Settings) -> None:
    hostile = long_home.run_dir.parent
    hostile.mkdir(mode=0o777)
    os.chown(hostile, NOBODY, NOBODY)
    with pytest.raises(UsageError, match=f"{hostile}: owned by uid {NOBODY}"):
        long_home.ensure_run_dir()
    assert not long_home.run_dir.exists()


def test_tmp_fallback_symlink_is_refused(long_home: Settings, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    long_home.run_dir.parent.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match="symlink"):
        long_home.ensure_run_dir()
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_private_dir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(UsageError, match="found a symlink or a file"):
        ensure_private_dir(tmp_path / "f")


def test_contexts_file_is_private_from_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loose_umask: None
) -> None:
    monkeypatch.delenv("SYSOPS_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    created: list[int] = []
    real_open = os.open

    def recording_open(path: str, flags: int, mode: int = 0o777, *args: object, **kwargs: object) -> int:
        if flags & os.O_CREAT and str(path).startswith(str(tmp_path)):  # not another thread's files
            created.append(mode)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", recording_open)
    contexts.set_context("prod", "grpc.example:443", "secret-token")
    path = contexts.config_path()
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert created == [0o600]
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]


_HTTP2_EMPTY_SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


class RecordingImpostor:
    """A Unix socket server that records every byte a client sends (it would see the bearer token)."""

    def __init__(self, path: Path) -> None:
        self.received = b""
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen()
        self.listener.settimeout(3)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        connection.settimeout(1)
        connection.sendall(_HTTP2_EMPTY_SETTINGS)  # gRPC sends its headers (and the token) only after this
        while True:
            try:
                chunk = connection.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            self.received += chunk

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=5)


@needs_root
def test_impostor_socket_of_another_uid_never_receives_the_token(tmp_path: Path) -> None:
    directory = ensure_private_dir(tmp_path / "run")
    path = directory / "plugin.sock"
    impostor = RecordingImpostor(path)
    os.chown(path, NOBODY, NOBODY)
    try:
        with PluginClient(f"unix://{path}", "hello", "the-secret-token") as client:
            with pytest.raises(PluginUnavailableError, match=f"refusing to send its token to {path}: .*uid {NOBODY}"):
                client.describe(timeout=1)
            with pytest.raises(PluginUnavailableError, match="refusing"):
                list(client.invoke("greet", {"name": "x"}, timeout=1))
    finally:
        impostor.close()
    assert b"the-secret-token" not in impostor.received


def test_a_socket_that_passed_is_asked_again_only_after_the_recheck_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = ensure_private_dir(tmp_path / "run")
    path = directory / "plugin.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    checked: list[str] = []
    real_check = client_module.check_socket_owner
    monkeypatch.setattr(client_module, "check_socket_owner", lambda *a: checked.append(a[0]) or real_check(*a))
    try:
        with PluginClient(f"unix://{path}", "hello", "the-secret-token") as client:
            for _ in range(3):
                assert ("authorization", "Bearer the-secret-token") in client.metadata
            assert checked == [str(path)]  # once per window, not once per call
            listener.close()
            path.unlink()
            path.write_text("")  # now something else stands there
            later = client_module.time.monotonic() + client_module.SOCKET_RECHECK_SECONDS
            monkeypatch.setattr(client_module.time, "monotonic", lambda: later)
            with pytest.raises(PluginUnavailableError, match=r"refusing to send its token .*it is not a socket"):
                client.metadata  # noqa: B018 - the check
            with pytest.raises(PluginUnavailableError, match="it is not a socket"):
                client.metadata  # noqa: B018 - a refusal is not kept as a pass
    finally:
        listener.close()


def test_socket_in_a_world_writable_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir()
    os.chmod(directory, 0o777)
    impostor = RecordingImpostor(directory / "plugin.sock")
    try:
        client = PluginClient(f"unix://{directory}/plugin.sock", "hello", "the-secret-token")
        with client, pytest.raises(PluginUnavailableError, match="writable by others"):
            client.describe(timeout=1)
    finally:
        impostor.close()
    assert b"the-secret-token" not in impostor.received


def test_build_cache_directories_are_private_from_creation(
    tmp_path: Path, loose_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cache/, cache/contexts and cache/wheels/<key> were made 0755 (a wheel another user swaps is installed)."""
    cache = tmp_path / "home" / "cache"
    cache.parent.mkdir(mode=0o700)
    monkeypatch.setattr(image.subprocess, "run", lambda *_a, **_k: subprocess.CompletedProcess([], 0, "", ""))
    wheels = image.prepare_wheels(["requests"], cache)
    assert wheels is not None
    archive = ContextArchive(cache / "contexts", seed=b"base")
    try:
        for directory in (cache, cache / "contexts", archive.directory, cache / "wheels", wheels):
            assert mode(directory) == 0o700, directory
    finally:
        archive.discard()


def test_lock_directory_is_private(tmp_path: Path, loose_umask: None) -> None:
    settings = Settings(home=tmp_path / "home")
    settings.ensure_home()
    store = Store(settings.store_path)
    try:
        orchestrator = Orchestrator(settings, FakeDriver(), store)
        with orchestrator.plugin_lock("demo"):
            assert mode(settings.home / "locks") == 0o700
    finally:
        store.close()


def test_the_plugin_socket_is_private_from_creation(tmp_path: Path, loose_umask: None) -> None:
    """The SDK binds plugin.sock under umask 077: even without its later chmod it is never open to others."""
    path = tmp_path / "plugin.sock"
    server = PluginServer(PluginRuntime(EchoV1()), f"unix://{path}")
    with patch.object(os, "chmod"):  # what the bind alone gives
        server.start()
    try:
        assert stat.S_ISSOCK(os.lstat(path).st_mode) and mode(path) & 0o077 == 0
    finally:
        server.server.stop(0)
