"""Claiming a development-mode spare (core/spares.py with sysops_sdk/_dev_code.py): the host's claim reaches a
spare waiting on its FIFO, a restarted spare keeps its code, and what a plugin could plant is refused."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import sysops_sdk._dev_code as dev_code
from sysops.core.spares import reclaim, send_claim, spare_key

FINGERPRINT = "dev-" + "ab" * 32


@pytest.fixture
def dev_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "plugin-dev"
    (root / FINGERPRINT).mkdir(parents=True)
    monkeypatch.setattr(dev_code, "DEV_ROOT", str(root))
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    return root


def _waiting_spare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, threading.Thread, list[str | None]]:
    """A spare's start in a thread: (its socket directory, the thread, where its code directory will be put)."""
    socket_dir = tmp_path / "run"
    socket_dir.mkdir()
    monkeypatch.setenv(dev_code.DEV_CODE_ENV, dev_code.CLAIM)
    found: list[str | None] = []
    waiting = threading.Thread(target=lambda: found.append(dev_code.use_dev_code(str(socket_dir))))
    waiting.start()
    return socket_dir, waiting, found


def test_a_spare_runs_the_code_it_is_claimed_for_and_keeps_it_after_a_restart(
    tmp_path: Path, dev_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket_dir, waiting, found = _waiting_spare(tmp_path, monkeypatch)
    time.sleep(0.2)
    assert waiting.is_alive(), "the spare did not wait for its claim"
    send_claim(socket_dir, FINGERPRINT, timeout=5)
    waiting.join(timeout=5)
    assert found == [f"{dev_root}/{FINGERPRINT}"]
    assert (socket_dir / dev_code.CLAIMED_FILE).read_text() == FINGERPRINT
    # A restart of the process: the claim is kept in the socket directory, no second claim is needed.
    assert dev_code.use_dev_code(str(socket_dir)) == f"{dev_root}/{FINGERPRINT}"


def test_a_named_fingerprint_is_used_at_once_and_a_malformed_one_refused(
    tmp_path: Path, dev_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setenv(dev_code.DEV_CODE_ENV, FINGERPRINT)
    assert dev_code.use_dev_code(str(tmp_path)) == f"{dev_root}/{FINGERPRINT}"
    assert sys.path[:2] == [f"{dev_root}/{FINGERPRINT}", f"{dev_root}/{FINGERPRINT}/src"]
    for bad in ("dev-../../etc", "dev-" + "cd" * 32):  # malformed; well formed but not mounted
        monkeypatch.setenv(dev_code.DEV_CODE_ENV, bad)
        with pytest.raises(dev_code.DevCodeError):
            dev_code.use_dev_code(str(tmp_path))
    monkeypatch.delenv(dev_code.DEV_CODE_ENV)
    assert dev_code.use_dev_code(str(tmp_path)) is None


def test_a_claim_is_not_written_through_what_a_plugin_could_plant(tmp_path: Path) -> None:
    socket_dir = tmp_path / "run"
    socket_dir.mkdir()
    target = tmp_path / "host-file"
    target.write_text("untouched")
    (socket_dir / "claim").symlink_to(target)
    with pytest.raises(OSError):
        send_claim(socket_dir, FINGERPRINT, timeout=0.1)
    (socket_dir / "claim").unlink()
    (socket_dir / "claim").write_text("")
    with pytest.raises(OSError, match="not a FIFO"):
        send_claim(socket_dir, FINGERPRINT, timeout=0.1)
    assert target.read_text() == "untouched"


def test_a_spare_that_never_waits_is_given_up_after_the_timeout(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "claim")  # no reader
    started = time.monotonic()
    with pytest.raises(OSError):
        send_claim(tmp_path, FINGERPRINT, timeout=0.2)
    assert time.monotonic() - started < 2


def test_a_spare_fits_only_the_image_manifest_and_endpoint_it_was_started_for() -> None:
    key = spare_key("sha256:a", {"name": "demo", "limits": {"memory_mb": 128}}, "unix:///h")
    assert key == spare_key("sha256:a", {"limits": {"memory_mb": 128}, "name": "demo"}, "unix:///h")
    assert key != spare_key("sha256:b", {"name": "demo", "limits": {"memory_mb": 128}}, "unix:///h")
    assert key != spare_key("sha256:a", {"name": "demo", "limits": {"memory_mb": 256}}, "unix:///h")
    assert key != spare_key("sha256:a", {"name": "demo", "limits": {"memory_mb": 128}}, "")


def test_a_claimed_spare_whose_socket_directory_was_emptied_is_told_its_code_again(
    tmp_path: Path, dev_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reboot empties the tmpfs that kept the claim: the restarted process waits as a spare again, and
    reconciliation's reclaim() gives it the code its claim recorded; a spare that kept its claim is left alone."""
    socket_dir, waiting, found = _waiting_spare(tmp_path, monkeypatch)
    deadline = time.monotonic() + 5
    while waiting.is_alive() and time.monotonic() < deadline:
        reclaim(socket_dir, FINGERPRINT)  # as every reconcile pass does, until it is heard
        time.sleep(0.02)
    waiting.join(timeout=1)
    assert found == [f"{dev_root}/{FINGERPRINT}"]
    assert not (socket_dir / dev_code.CLAIM_FIFO).exists(), "the FIFO outlived its one claim"
    os.mkfifo(socket_dir / dev_code.CLAIM_FIFO)
    reclaim(socket_dir, "dev-" + "ef" * 32)  # kept its claim: nothing is written, nothing waits
    assert (socket_dir / dev_code.CLAIMED_FILE).read_text() == FINGERPRINT


def test_a_waiting_spare_ends_at_once_on_sigterm(tmp_path: Path) -> None:
    """PID 1 of its container: without its handler, `docker stop` of a spare waited for SIGKILL."""
    import signal
    import subprocess
    import sys

    code = (
        "import os, sys; os.environ['SYSOPS_DEV_CODE'] = 'claim'; "
        "import sysops_sdk._dev_code as d; d.use_dev_code(sys.argv[1])"
    )
    spare = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)])
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / dev_code.CLAIM_FIFO).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        spare.send_signal(signal.SIGTERM)
        assert spare.wait(timeout=5) == 0
    finally:
        spare.kill()
