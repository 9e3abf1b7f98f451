"""Configuration plugins on the real engine (issue 11 part F): a configuration plugin brought up owns its section
of the system configuration; `sysops config validate` passes a good file and names the plugin owning a bad key
(exit 4, one line per problem); `sysops config show` shows defaults and owners; the plugin reads its section,
defaults merged in, through the host's config service (`ConfigurationPlugin.section()`); once the plugin is
down its section is nobody's. The plugin is tests/integration/plugins/backup-config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.integration.conftest import Sysops

pytestmark = pytest.mark.integration

BACKUP_CONFIG = Path(__file__).parent / "plugins" / "backup-config"
OWNER = "owned by plugin backup-config 1.0.0"


@pytest.fixture(scope="module")
def backup_config(sysops: Sysops, tmp_path_factory: pytest.TempPathFactory) -> Path:
    plugin_dir = tmp_path_factory.mktemp("plugins") / "backup-config"
    shutil.copytree(BACKUP_CONFIG, plugin_dir)
    sysops.home.mkdir(parents=True, exist_ok=True)
    (sysops.home / "policy.yaml").write_text("plugins: {backup-config: {grants: [config.read]}}\n")
    (sysops.home / "config.yaml").write_text("backup:\n  retention_days: 30\n  target: /srv/backup\n")
    sysops.ok("plugin", "up", str(plugin_dir))
    return plugin_dir


def test_validate_passes_a_good_file(sysops: Sysops, backup_config: Path, tmp_path: Path) -> None:
    good = tmp_path / "config.yaml"
    good.write_text("plugin_dirs: [plugins]\nbackup: {target: /mnt/backup, compress: false}\n")
    result = sysops.run("config", "validate", str(good))
    assert result.returncode == 0, result.stderr
    assert sysops.run("config", "validate").returncode == 0  # the installation's own file


def test_validate_names_the_plugin_owning_a_bad_key(sysops: Sysops, backup_config: Path, tmp_path: Path) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text("backup:\n  retention_days: x\n  target: /srv\nfoo: {bar: 1}\n")
    result = sysops.run("config", "validate", str(bad))
    assert result.returncode == 4, result.stderr
    assert result.stderr.splitlines() == [
        f"error: {bad}: key 'backup.retention_days': must be of type int (got 'x'); {OWNER}",
        f"error: {bad}: no installed plugin owns section 'foo' (sections of installed plugins: backup; "
        "sysops's own: plugin_dirs)",
    ]
    missing = tmp_path / "required.yaml"
    missing.write_text("backup: {retention_days: 3}\n")
    result = sysops.run("config", "validate", str(missing))
    assert result.returncode == 4 and "Traceback" not in result.stderr
    assert result.stderr == f"error: {missing}: key 'backup.target': required, but has no value; {OWNER}\n"


def test_show_lists_values_defaults_and_owners(sysops: Sysops, backup_config: Path) -> None:
    data = json.loads(sysops.ok("config", "show", "-o", "json"))
    assert data["file"] == str(sysops.home / "config.yaml") and data["problems"] == []
    rows = {row["key"]: row for row in data["keys"]}
    assert [rows[key]["source"] for key in ("backup.compress", "backup.retention_days", "backup.target")] == [
        "default",
        "file",
        "file",
    ]
    assert rows["backup.compress"]["value"] is True and rows["backup.retention_days"]["default"] == 7
    assert {row["owner"] for key, row in rows.items() if key.startswith("backup.")} == {"backup-config 1.0.0"}
    assert rows["plugin_dirs"]["owner"] == "sysops"
    table = sysops.ok("config", "show").splitlines()
    assert table[0].split() == ["KEY", "VALUE", "DEFAULT", "OWNER", "SOURCE"]
    assert ["backup.compress", "true", "true", "backup-config", "1.0.0", "default"] in [line.split() for line in table]


def test_the_plugin_reads_its_section_through_the_host(sysops: Sysops, backup_config: Path) -> None:
    assert json.loads(sysops.ok("backup-settings")) == {"compress": True, "retention_days": 30, "target": "/srv/backup"}
    config = sysops.home / "config.yaml"
    config.write_text("backup: {retention_days: 45, target: /srv/backup}\n")  # read at each call: no restart
    assert json.loads(sysops.ok("backup-settings"))["retention_days"] == 45
    config.write_text("backup: {retention_days: forever, target: /srv/backup}\n")
    refused = sysops.run("backup-settings")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "key 'backup.retention_days': must be of type int (got 'forever')" in refused.stderr, refused.stderr
    config.write_text("backup: {retention_days: 30, target: /srv/backup}\n")


def test_a_section_of_a_plugin_taken_down_is_nobodys(sysops: Sysops, backup_config: Path) -> None:
    sysops.ok("plugin", "down", "backup-config")
    result = sysops.run("config", "validate")
    assert result.returncode == 4
    assert "no installed plugin owns section 'backup' (sections of installed plugins: none;" in result.stderr
