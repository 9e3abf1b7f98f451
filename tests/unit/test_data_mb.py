"""`limits.data_mb`, the size of a plugin's /data filesystem (issue 8 item 2): manifest, policy, helpers.

The filesystem itself is exercised on the real engine in tests/integration/test_hardening_isolation.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sysops.core.manifest import parse_manifest
from sysops.core.policy import Caps, LimitValues, Policy, apply_policy
from sysops.core.rollout import limits_for
from sysops.errors import ManifestError, PolicyDeniedError, RuntimeOperationError
from sysops.runtime.docker import data_filesystems

BASE = {"name": "hello", "version": "1.0.0", "entrypoint": "hello.plugin:P"}


def test_data_mb_defaults_to_256_and_reaches_the_driver_in_bytes() -> None:
    manifest = parse_manifest(BASE, "plugin.yaml")
    assert manifest.limits.data_mb == 256
    assert limits_for(manifest).data_bytes == 256 << 20


@pytest.mark.parametrize("value", [8, 0, "64", True, 1 << 21])
def test_data_mb_out_of_range_or_not_an_integer_is_refused_naming_the_key(value: object) -> None:
    with pytest.raises(ManifestError, match=r"plugin.yaml: key 'limits.data_mb'"):
        parse_manifest({**BASE, "limits": {"data_mb": value}}, "plugin.yaml")


def test_policy_caps_and_defaults_data_mb() -> None:
    policy = Policy(defaults=LimitValues(data_mb=64), caps=Caps(data_mb=128), source="policy.yaml")
    assert apply_policy(parse_manifest(BASE, "p.yaml"), policy, "p.yaml").limits.data_mb == 64
    asked = parse_manifest({**BASE, "limits": {"data_mb": 512}}, "p.yaml")
    with pytest.raises(PolicyDeniedError, match=r"p.yaml: limits.data_mb asks 512, policy caps it at 128"):
        apply_policy(asked, policy, "p.yaml")
    lowered = apply_policy(parse_manifest(BASE, "p.yaml"), Policy(caps=Caps(data_mb=100)), "p.yaml")
    assert lowered.limits.data_mb == 100


@pytest.mark.skipif(os.geteuid() == 0, reason="checks the refusal of a non-root operator")
def test_a_non_root_operator_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(RuntimeOperationError, match=r"hello: /data is a size-limited filesystem .* needs root"):
        data_filesystems.ensure_data_filesystem(tmp_path / "data" / "hello", 32 << 20, 0x10000001, "hello")


def test_only_data_filesystems_of_ours_are_unmounted_or_deleted(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "file").write_text("keep")
    data_filesystems.remove_data_filesystem(str(precious))  # a forged volume naming some directory
    data_filesystems.remove_data_filesystem(str(precious / "mnt"))  # ... or a mnt without our image beside it
    assert (precious / "file").read_text() == "keep"
    assert data_filesystems.data_size_bytes(str(precious)) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a filesystem needs root")
def test_a_smaller_data_mb_is_refused_before_anything_changes(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "hello"
    mountpoint = data_filesystems.ensure_data_filesystem(directory, 32 << 20, 0x10000001, "hello")
    try:
        (mountpoint / "kept").write_text("data")
        with pytest.raises(ManifestError, match=r"hello: limits\.data_mb 16 is below the 32 MiB its /data already has"):
            data_filesystems.ensure_data_filesystem(directory, 16 << 20, 0x10000001, "hello")
        assert (mountpoint / "kept").read_text() == "data"
        assert os.stat(mountpoint).st_uid == 0x10000001
    finally:
        data_filesystems.remove_data_filesystem(str(mountpoint))
    assert not directory.exists() and not os.path.ismount(mountpoint)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a filesystem needs root")
def test_an_older_volume_is_copied_in_and_given_to_the_plugin_or_nothing_is_kept(tmp_path: Path) -> None:
    older = tmp_path / "older"
    (older / "sub").mkdir(parents=True)
    (older / "sub" / "note").write_text("old")
    os.symlink("/etc/shadow", older / "link")  # copied as a link, never followed
    for path in (older / "sub", older / "sub" / "note"):
        os.chown(path, 10001, 10001, follow_symlinks=False)
    directory = tmp_path / "data" / "hello"
    mountpoint = data_filesystems.ensure_data_filesystem(directory, 16 << 20, 0x10000001, "hello", str(older))
    try:
        assert (mountpoint / "sub" / "note").read_text() == "old"
        assert os.readlink(mountpoint / "link") == "/etc/shadow"
        owners = {os.lstat(path).st_uid for path in (mountpoint, mountpoint / "sub", mountpoint / "sub" / "note")}
        assert owners == {0x10000001} and os.stat("/etc/shadow").st_uid == 0
    finally:
        data_filesystems.remove_data_filesystem(str(mountpoint))
    with open(older / "big", "wb") as big:
        big.write(b"x" * (24 << 20))
    with pytest.raises(RuntimeOperationError, match="hello: cannot copy its older data volume into /data") as error:
        data_filesystems.ensure_data_filesystem(directory, 16 << 20, 0x10000001, "hello", str(older))
    assert "raise limits.data_mb" in str(error.value)
    assert not directory.exists() and not os.path.ismount(mountpoint)
