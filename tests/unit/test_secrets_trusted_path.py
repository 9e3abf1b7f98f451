"""A secret file is read by the host, often root: a path another local user can change would let them hand a
plugin any file the host can read (a link to /etc/shadow planted in their directory). Every component of the
path and of its target must be owned by root or the host's user, no directory on the way writable by others
unless sticky, and the file not writable by others; the refusal names the secret and the reason."""

from __future__ import annotations

import os
from pathlib import Path

from sysops.core.policy import Policy
from sysops.services.call import ServiceCallError
from sysops.services.secrets_service import SecretsService

OTHER_UID = 54321


def _read(path: Path) -> str:
    policy = Policy.model_validate({"plugins": {"fetcher": {"secrets": {"token": {"file": str(path)}}}}})
    service = SecretsService(lambda plugin: {"secrets": ["token"]}, lambda: policy, lambda key: f"plugins.{key}")
    return service.read("fetcher", "token")


def _refusal(path: Path) -> str:
    try:
        _read(path)
    except ServiceCallError as error:
        assert error.code == "unavailable" and "secret 'token' of plugin 'fetcher'" in error.message
        return error.message
    raise AssertionError(f"{path} was read")


def test_a_private_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    assert _read(tmp_path / "token") == "s3cret"


def test_a_link_in_another_users_directory_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    target = tmp_path / "shadow"
    target.write_text("root-only\n")
    (theirs / "token").symlink_to(target)
    os.lchown(theirs / "token", OTHER_UID, OTHER_UID)
    os.chown(theirs, OTHER_UID, OTHER_UID)
    message = _refusal(theirs / "token")
    assert f"owned by uid {OTHER_UID}" in message and "root-only" not in message


def test_a_directory_others_can_write_is_refused_unless_sticky(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "token").write_text("s3cret\n")
    shared.chmod(0o777)
    assert "is writable by others" in _refusal(shared / "token")
    shared.chmod(0o1777)  # like /tmp: others cannot replace the file this user owns there
    assert _read(shared / "token") == "s3cret"


def test_a_file_others_can_write_or_own_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o622)
    assert "writable by others" in _refusal(token)
    token.chmod(0o600)
    os.chown(token, OTHER_UID, OTHER_UID)
    assert f"owned by uid {OTHER_UID}" in _refusal(token)
