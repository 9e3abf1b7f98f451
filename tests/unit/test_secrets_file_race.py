"""A secret file the policy names may sit in a directory someone else can write: swapped for a FIFO between the
host's check and its read, it must not block the thread answering the plugin (a FIFO with no writer blocks an
open forever). The file is opened without blocking and checked again through the open handle."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from sysops.core.policy import Policy
from sysops.services import secrets_service
from sysops.services.call import ServiceCallError
from sysops.services.secrets_service import SecretsService


def _service(path: Path) -> SecretsService:
    policy = Policy.model_validate({"plugins": {"fetcher": {"secrets": {"token": {"file": str(path)}}}}})
    return SecretsService(lambda plugin: {"secrets": ["token"]}, lambda: policy, lambda key: f"plugins.{key}")


def _read_within(service: SecretsService, seconds: float) -> list[object]:
    outcome: list[object] = []

    def reading() -> None:
        try:
            outcome.append(service.read("fetcher", "token"))
        except ServiceCallError as error:
            outcome.append(error)

    thread = threading.Thread(target=reading, daemon=True)
    thread.start()
    thread.join(timeout=seconds)
    return outcome


def test_a_secret_file_swapped_for_a_fifo_after_the_check_is_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    real_stat = os.stat

    def stat_then_swap(target: object, *args: object, **keys: object) -> os.stat_result:
        result = real_stat(target, *args, **keys)  # type: ignore[arg-type]
        if str(target) == str(path) and stat.S_ISREG(result.st_mode):
            path.unlink()
            os.mkfifo(path)  # what another local user does to the file between the check and the open
        return result

    monkeypatch.setattr(secrets_service.os, "stat", stat_then_swap)
    outcome = _read_within(_service(path), 3)
    monkeypatch.undo()
    assert path.is_fifo(), "the swap was made"
    assert outcome, "the host's read blocked on a FIFO"
    assert isinstance(outcome[0], ServiceCallError) and "not a regular file" in outcome[0].message


def test_a_fifo_or_a_device_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        [refused] = _read_within(_service(path), 3)
        assert isinstance(refused, ServiceCallError) and "not a regular file" in refused.message
