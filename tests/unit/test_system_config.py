"""The system configuration (services/system_config.py): sections owned by configuration plugins, validation
naming file, key and owner, `show`, the config service's `section` method, and `sysops config validate|show`
through a `sysops serve` in this process (fake driver, TCP, a viewer's token). No engine."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sysops.cli.main import main
from sysops.errors import ExitCode
from sysops.runtime.fake import FakeDriver
from sysops.server.service import serve
from sysops.services.dispatch import Caller, HostServices, ServiceCallError
from sysops.services.system_config import SystemConfig, parse, problems, rows, section_owners
from sysops.settings import Settings
from sysops.store import PluginRecord, Store

BACKUP = {
    "name": "backup-config",
    "version": "1.0.0",
    "types": ["configuration"],
    "permissions": ["config.read"],
    "configuration": {
        "section": "backup",
        "keys": {
            "retention_days": {"type": "int", "default": 7, "help": "Days backups are kept"},
            "target": {"type": "str", "required": True},
            "mode": {"type": "str", "choices": ["full", "incremental"], "default": "full"},
        },
    },
}
MAIL = {
    "name": "mail-config",
    "version": "2.1.0",
    "types": ["configuration"],
    "permissions": ["config.read"],
    "configuration": {"section": "mail", "keys": {"relay": {"type": "str", "default": "localhost"}}},
}
PLAIN = {"name": "plain", "version": "0.1.0", "types": ["command"], "permissions": ["config.read"]}
GOOD = "plugin_dirs: [plugins]\nbackup: {retention_days: 30, target: /srv/backup}\n"
VIEWER_TOKEN = "viewer-token-0123456789"


def _record(manifest: dict[str, Any], key: str = "") -> PluginRecord:
    return PluginRecord(key or manifest["name"], "/src", "docker", manifest, "")


def _problems(text: str, *manifests: dict[str, Any]) -> list[str]:
    data, unreadable = parse(text, "config.yaml")
    owners = section_owners(_record(manifest) for manifest in (manifests or (BACKUP, MAIL, PLAIN)))
    return unreadable or problems("config.yaml", data, owners)


def test_a_good_file_has_no_problems() -> None:
    assert _problems(GOOD) == []


def test_a_bad_value_names_the_file_the_key_and_the_owning_plugin() -> None:
    assert _problems("backup: {retention_days: x, target: /srv}\n") == [
        "config.yaml: key 'backup.retention_days': must be of type int (got 'x'); owned by plugin backup-config 1.0.0"
    ]
    assert _problems("backup: {mode: daily, target: /srv}\n") == [
        "config.yaml: key 'backup.mode': must be one of 'full', 'incremental' (got 'daily'); "
        "owned by plugin backup-config 1.0.0"
    ]


def test_unknown_sections_unknown_keys_and_missing_required_keys() -> None:
    found = _problems("foo: {a: 1}\nbackup: {retension_days: 3}\nmail: 5\n")
    assert found == [
        "config.yaml: no installed plugin owns section 'foo' (sections of installed plugins: backup, mail; "
        "sysops's own: plugin_dirs)",
        "config.yaml: key 'backup.retension_days': not a key of section 'backup' (its keys: mode, retention_days, "
        "target); owned by plugin backup-config 1.0.0",
        "config.yaml: key 'backup.target': required, but has no value; owned by plugin backup-config 1.0.0",
        "config.yaml: key 'mail': must be a mapping of the section's keys (got 5); owned by plugin mail-config 2.1.0",
    ]
    # a required key is required even when its section is absent
    assert _problems("") == [
        "config.yaml: key 'backup.target': required, but has no value; owned by plugin backup-config 1.0.0"
    ]
    # a section of a plugin that is not installed is nobody's
    assert _problems("mail: {relay: x}\n", MAIL) == []
    assert _problems("mail: {relay: x}\n", PLAIN)[0].startswith("config.yaml: no installed plugin owns section 'mail'")


def test_sysops_own_key_and_unreadable_files() -> None:
    assert _problems("plugin_dirs: plugins\nbackup: {target: /srv}\n") == [
        "config.yaml: key 'plugin_dirs': must be a list of directory paths (got 'plugins'); owned by sysops"
    ]
    assert _problems("backup: [\n")[0].startswith("config.yaml: not valid YAML at line")
    assert _problems("- a\n- b\n") == ["config.yaml: expected a mapping of sections (got ['a', 'b'])"]
    assert _problems("a: 1\na: 2\n")[0].startswith("config.yaml: not valid YAML")  # a repeated key


def test_one_section_two_claims_and_side_by_side_versions() -> None:
    rival = {**MAIL, "name": "other-mail", "version": "1.0.0"}
    assert _problems("mail: {relay: x}\n", MAIL, rival) == [
        "section 'mail' is claimed by both plugin mail-config 2.1.0 and plugin other-mail 1.0.0 (take one of them down)"
    ]
    old = {**MAIL, "version": "1.0.0"}
    owners = section_owners([_record(MAIL), _record(old, "mail-config--v1")])
    assert owners.problems == [] and owners.sections["mail"].version == "2.1.0"
    sysops_key = {**MAIL, "configuration": {"section": "plugin_dirs", "keys": {}}}
    assert section_owners([_record(sysops_key)]).problems == [
        "plugin mail-config 2.1.0 claims section 'plugin_dirs', which is sysops's own key"
    ]


def test_rows_show_value_default_owner_and_source() -> None:
    data, _ = parse(GOOD, "config.yaml")
    shown = {row["key"]: row for row in rows(data, section_owners([_record(BACKUP), _record(MAIL)]))}
    assert list(shown) == ["plugin_dirs", "backup.mode", "backup.retention_days", "backup.target", "mail.relay"]
    assert shown["backup.retention_days"] | {"help": ""} == {
        "key": "backup.retention_days",
        "value": 30,
        "default": 7,
        "type": "int",
        "owner": "backup-config 1.0.0",
        "source": "file",
        "help": "",
    }
    assert (shown["backup.mode"]["value"], shown["backup.mode"]["source"]) == ("full", "default")
    assert (shown["mail.relay"]["owner"], shown["mail.relay"]["source"]) == ("mail-config 2.1.0", "default")
    assert (shown["plugin_dirs"]["owner"], shown["plugin_dirs"]["value"]) == ("sysops", ["plugins"])


# the host: store, config file and the config service's `section`


def _save(settings: Settings, *manifests: dict[str, Any]) -> None:
    store = Store(settings.store_path)
    for manifest in manifests:
        store.save_plugin(manifest["name"], "/src", "docker", manifest)
    store.close()


@pytest.fixture
def services(settings: Settings) -> Iterator[HostServices]:
    settings.home.mkdir(parents=True, exist_ok=True)
    _save(settings, BACKUP, MAIL, PLAIN)
    (settings.home / "policy.yaml").write_text('plugins: {"*": {grants: [config.read]}}\n')
    host_services = HostServices(settings, settings.store_path)
    yield host_services
    host_services.close()


def _section(services: HostServices, plugin: str) -> Any:
    return services.call(Caller(plugin, f"{plugin}-1", 1), "config", "section", {})


def test_a_configuration_plugin_reads_its_section_with_defaults(services: HostServices, settings: Settings) -> None:
    (settings.home / "config.yaml").write_text(GOOD)
    assert _section(services, "backup-config") == {
        "section": "backup",
        "values": {"mode": "full", "retention_days": 30, "target": "/srv/backup"},
    }
    assert _section(services, "mail-config") == {"section": "mail", "values": {"relay": "localhost"}}
    (settings.home / "config.yaml").write_text("backup: {retention_days: x, target: /srv}\n")
    with pytest.raises(ServiceCallError) as invalid:
        _section(services, "backup-config")
    assert invalid.value.code == "invalid_argument"
    assert "key 'backup.retention_days': must be of type int (got 'x')" in invalid.value.message
    assert _section(services, "mail-config")["values"] == {"relay": "localhost"}  # another section's problem
    with pytest.raises(ServiceCallError) as none:
        _section(services, "plain")
    assert "owns no section of the system configuration" in none.value.message


def test_section_needs_config_read(services: HostServices, settings: Settings) -> None:
    (settings.home / "policy.yaml").write_text("plugins: {}\n")
    with pytest.raises(ServiceCallError) as refused:
        _section(services, "backup-config")
    assert refused.value.code == "permission_denied" and "'config.read'" in refused.value.message


def test_the_config_file_is_sysops_config_else_the_home_one(
    services: HostServices, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = SystemConfig(settings, lambda: services.database.store.plugins())
    assert system.show()["exists"] is False
    named = tmp_path / "elsewhere.yaml"
    named.write_text("backup: {target: /mnt}\n")
    monkeypatch.setenv("SYSOPS_SYSTEM_CONFIG", str(named))
    shown = system.show()
    assert (shown["file"], shown["exists"], shown["problems"]) == (str(named), True, [])
    assert system.section("backup-config")["values"]["target"] == "/mnt"


# the CLI, through a server in this process


@pytest.fixture
def served(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[HostServices]:
    """A TCP control server with the host services attached; the CLI calls it as a viewer."""
    settings.home.mkdir(parents=True, exist_ok=True)
    callers = [{"name": "alice", "token_sha256": hashlib.sha256(VIEWER_TOKEN.encode()).hexdigest(), "role": "viewer"}]
    (settings.home / "policy.yaml").write_text(json.dumps({"callers": callers}))
    _save(settings, BACKUP, MAIL, PLAIN)
    server = serve("127.0.0.1:0", "docker", "admin-token-0123456789", settings, driver=FakeDriver())
    host_services = HostServices(settings, settings.store_path)
    assert server.servicer is not None
    server.servicer.attach_host_services(host_services)
    monkeypatch.setenv("SYSOPS_SERVER", f"127.0.0.1:{server.port}")
    monkeypatch.setenv("SYSOPS_INSECURE", "1")  # the test server is plaintext
    monkeypatch.setenv("SYSOPS_TOKEN", VIEWER_TOKEN)
    yield host_services
    server.stop(0).wait(5)
    host_services.close()


def test_config_validate_on_the_cli(served: HostServices, tmp_path: Path, capsys: Any) -> None:
    good = tmp_path / "config.yaml"
    good.write_text(GOOD)
    assert main(["config", "validate", str(good)]) == 0
    assert "valid" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("backup: {retention_days: x, target: /srv}\nfoo: {bar: 1}\n")
    assert main(["config", "validate", str(bad)]) == ExitCode.INVALID_PLUGIN
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"error: {bad}: key 'backup.retention_days': must be of type int (got 'x'); "
        "owned by plugin backup-config 1.0.0",
        f"error: {bad}: no installed plugin owns section 'foo' (sections of installed plugins: backup, mail; "
        "sysops's own: plugin_dirs)",
    ]
    bad.write_text('"\\e]52;c;aGk=\\a": 1\n')  # a section name that would set the clipboard
    assert main(["config", "validate", str(bad)]) == ExitCode.INVALID_PLUGIN
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "no installed plugin owns section" in err
    bad.write_text("backup: {retention_days: x, target: /srv}\nfoo: {bar: 1}\n")
    assert main(["config", "validate", str(bad), "-o", "json"]) == ExitCode.INVALID_PLUGIN
    assert len(json.loads(capsys.readouterr().out)["problems"]) == 2
    assert main(["config", "validate", str(tmp_path / "missing.yaml")]) == ExitCode.INVALID_PLUGIN
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.yaml: no such configuration file" in err and "Traceback" not in err


def test_config_show_on_the_cli(served: HostServices, settings: Settings, capsys: Any) -> None:
    (settings.home / "config.yaml").write_text(GOOD)
    assert main(["config", "show"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["KEY", "VALUE", "DEFAULT", "OWNER", "SOURCE"]
    assert lines[2].split() == ["backup.mode", '"full"', '"full"', "backup-config", "1.0.0", "default"]
    assert lines[3].split() == ["backup.retention_days", "30", "7", "backup-config", "1.0.0", "file"]
    assert main(["config", "show", "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["file"] == str(settings.home / "config.yaml") and data["problems"] == []
    (settings.home / "config.yaml").write_text("backup: {retention_days: x}\n")
    assert main(["config", "show"]) == ExitCode.INVALID_PLUGIN
    err = capsys.readouterr().err
    assert "key 'backup.retention_days': must be of type int (got 'x'); owned by plugin backup-config 1.0.0" in err
