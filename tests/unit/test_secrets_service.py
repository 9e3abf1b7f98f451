"""The `secrets` host service through HostServices: the manifest's `secrets:` and the policy's references gate
each call, a file is read at call time, a Kubernetes Secret through the reader, no grant is needed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sysops.errors import RuntimeOperationError
from sysops.services.dispatch import Caller, HostServices, ServiceCallError
from sysops.services.permissions import SERVICES, methods_of, permission_for
from sysops.settings import Settings
from sysops.store import Store

FETCHER = Caller("fetcher", "fetcher-1", 1)


def _policy(settings: Settings, text: str) -> None:
    path = settings.home / "policy.yaml"
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("s3cret-value\n")
    return path


@pytest.fixture
def services(settings: Settings, token_file: Path) -> Iterator[HostServices]:
    store = Store(settings.store_path)
    manifest = {"name": "fetcher", "version": "1.0.0", "secrets": ["api-token", "unset", "from-cluster", "missing"]}
    store.save_plugin("fetcher", "/src", "docker", manifest)
    store.save_plugin("other", "/src", "docker", {"name": "other", "version": "1.0.0"})
    store.save_plugin("fetcher--v1", "/src", "docker", {**manifest, "version": "0.9.0"})  # side by side
    store.close()
    _policy(
        settings,
        "plugins:\n"
        '  "*": {secrets: {unset: {file: /etc/hostname}}}\n'
        f"  fetcher: {{secrets: {{api-token: {{file: {token_file}}}, missing: {{file: {token_file}.gone}},"
        " from-cluster: {kubernetes: {name: api, key: token}}}}\n"
        f"  other: {{secrets: {{api-token: {{file: {token_file}}}}}}}\n",
    )
    host_services = HostServices(settings, settings.store_path)
    yield host_services
    host_services.close()


def _get(services: HostServices, name: str, caller: Caller = FETCHER) -> str:
    return str(services.call(caller, "secrets", "get", {"name": name})["value"])


def _refusal(services: HostServices, name: str, code: str, caller: Caller = FETCHER) -> str:
    with pytest.raises(ServiceCallError) as caught:
        _get(services, name, caller)
    assert caught.value.code == code, str(caught.value)
    return str(caught.value)


def test_the_secret_is_read_from_the_file_at_call_time(services: HostServices, token_file: Path) -> None:
    assert _get(services, "api-token") == "s3cret-value"  # one trailing newline dropped
    token_file.write_text("rotated")
    assert _get(services, "api-token") == "rotated"


def test_a_name_the_manifest_does_not_list_is_refused_even_when_policy_gives_it(services: HostServices) -> None:
    message = _refusal(services, "api-token", "permission_denied", Caller("other", "other-1", 1))
    assert message == (
        "plugin 'other' asked for secret 'api-token', which its manifest does not list "
        "(add it to secrets: in plugin.yaml)"
    )
    assert "which its manifest does not list" in _refusal(services, "db-password", "permission_denied")


def test_a_listed_name_the_policy_does_not_give_is_refused_naming_the_key(
    services: HostServices, settings: Settings
) -> None:
    message = _refusal(services, "unset", "permission_denied")  # plugins."*" does not count
    assert "which policy does not give" in message
    assert f"plugins.fetcher.secrets.unset in {settings.home / 'policy.yaml'}" in message


def test_a_missing_file_names_the_secret_and_the_policy_key_not_the_value(
    services: HostServices, token_file: Path
) -> None:
    message = _refusal(services, "missing", "unavailable")
    assert message == (
        "secret 'missing' of plugin 'fetcher' cannot be read (plugins.fetcher.secrets.missing): "
        f"{token_file}.gone: No such file or directory"
    )


def test_a_fifo_or_an_oversized_or_binary_file_is_refused(
    services: HostServices, settings: Settings, tmp_path: Path, token_file: Path
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, fragment in ((fifo, "not a regular file"), (tmp_path / "big", "above 65536 bytes")):
        if path.name == "big":
            path.write_bytes(b"x" * 70_000)
        token_file.unlink()
        token_file.symlink_to(path)
        assert fragment in _refusal(services, "api-token", "unavailable")
        token_file.unlink()
        token_file.write_text("back")
    token_file.write_bytes(b"\xff\xfe")
    assert "is not UTF-8 text" in _refusal(services, "api-token", "unavailable")


def test_a_kubernetes_reference_goes_to_the_reader(services: HostServices) -> None:
    asked: list[tuple[str, str]] = []

    def reader(name: str, key: str) -> bytes:
        asked.append((name, key))
        if name != "api":
            raise RuntimeOperationError("cannot read Secret x in namespace y: 403 Forbidden")
        return b"from-the-api"

    services.secrets._kubernetes = reader
    assert _get(services, "from-cluster") == "from-the-api"
    assert asked == [("api", "token")]

    def forbidden(name: str, key: str) -> bytes:
        raise RuntimeOperationError("cannot read Secret api in namespace sysops: 403 Forbidden")

    services.secrets._kubernetes = forbidden
    assert _refusal(services, "from-cluster", "unavailable").endswith(
        "(plugins.fetcher.secrets.from-cluster): cannot read Secret api in namespace sysops: 403 Forbidden"
    )


def test_secrets_need_no_grant_and_take_only_a_name(services: HostServices) -> None:
    assert permission_for("secrets", "get") == ""
    assert "secrets" in SERVICES and methods_of("secrets") == ("get",)
    with pytest.raises(ServiceCallError, match=r"secrets\.get takes no argument 'path'"):
        services.call(FETCHER, "secrets", "get", {"name": "api-token", "path": "/etc/shadow"})
    with pytest.raises(ServiceCallError, match="has no method 'list'"):
        services.call(FETCHER, "secrets", "list", {})


def test_a_side_by_side_version_reads_its_plugins_secret(services: HostServices) -> None:
    assert _get(services, "api-token", Caller("fetcher--v1", "fetcher-v1-1", 1)) == "s3cret-value"
