"""`sysops plugin new` without an engine: name checks, refusals (one line, exit 2), and what each type writes.

The scaffolds' own tests and `plugin up` on the real engine are in tests/integration/test_scaffold.py.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sysops.core.manifest import load_manifest
from sysops.errors import UsageError
from sysops.reserved import RESERVED_COMMANDS
from sysops.scaffold.names import ScaffoldNames, check_scaffold_name
from sysops.scaffold.render import PLUGIN_TYPES, plugin_files

SYSOPS = str(Path(sys.executable).with_name("sysops"))


def sysops(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSOPS_HOME": str(cwd / "home")}
    return subprocess.run([SYSOPS, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_names_of_a_plugin() -> None:
    assert check_scaffold_name("disk-report") == ScaffoldNames(
        plugin="disk-report",
        package="disk_report_plugin",
        class_name="DiskReportPlugin",
        distribution="sysops-disk-report",
        section="disk_report",
    )
    assert check_scaffold_name("a").class_name == "APlugin"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Disk", "a plugin name has lowercase letters"),
        ("disk_report", "a plugin name has lowercase letters"),
        ("-disk", "a plugin name has lowercase letters"),
        ("disk-", "a plugin name has lowercase letters"),
        ("", "a plugin name has lowercase letters"),
        ("a" * 64, "a plugin name has lowercase letters"),
        ("disk\nreport", "a plugin name has lowercase letters"),
        ("disk--v2", "kept for side-by-side versions"),
        ("9disk", "must start with a letter"),
        ("plugin", "it is a sysops command"),
        ("serve", "it is a sysops command"),
        ("plugin-dirs", "config section 'plugin_dirs' belongs to sysops"),
        ("test", "its package 'test_plugin' would be shadowed by the scaffold's tests/test_plugin.py"),
    ],
)
def test_bad_and_reserved_names_are_refused(name: str, why: str) -> None:
    with pytest.raises(UsageError) as refused:
        check_scaffold_name(name)
    assert why in str(refused.value)
    assert "\n" not in str(refused.value)
    assert refused.value.exit_code == 2


def test_every_reserved_word_and_the_clis_own_commands_are_refused() -> None:
    for word in RESERVED_COMMANDS:
        if word[0].isalpha():
            with pytest.raises(UsageError, match="it is a sysops command"):
                check_scaffold_name(word)
    with pytest.raises(UsageError, match="it is a sysops command"):
        check_scaffold_name("completion", builtin_commands=["completion"])


@pytest.mark.parametrize("plugin_type", PLUGIN_TYPES)
def test_each_type_writes_a_valid_plugin(plugin_type: str, tmp_path: Path) -> None:
    names = check_scaffold_name("disk-report")
    files = plugin_files(names, plugin_type)
    assert set(files) == {
        "plugin.yaml",
        "pyproject.toml",
        "README.md",
        ".gitignore",
        ".dockerignore",
        "disk_report_plugin/__init__.py",
        "disk_report_plugin/plugin.py",
        "tests/test_plugin.py",
    }
    for relative, text in files.items():
        assert "${" not in text, relative  # every placeholder filled
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
        if relative.endswith(".py"):
            ast.parse(text, relative)
    manifest = load_manifest(tmp_path)
    assert (manifest.name, manifest.version) == ("disk-report", "0.1.0")
    assert manifest.entrypoint == "disk_report_plugin.plugin:DiskReportPlugin"
    assert manifest.types[0] == plugin_type
    assert "class DiskReportPlugin(" in files["disk_report_plugin/plugin.py"]
    assert "def test_" in files["tests/test_plugin.py"]
    assert "from sysops_sdk" in files["disk_report_plugin/plugin.py"]


def test_plugin_new_writes_the_directory_and_says_what_next(tmp_path: Path) -> None:
    made = sysops("plugin", "new", "disk-report", "--type", "service", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "created service plugin disk-report in disk-report" in made.stdout
    assert "sysops plugin up disk-report" in made.stdout
    assert "types: [service, command]" in (tmp_path / "disk-report" / "plugin.yaml").read_text()
    elsewhere = sysops("plugin", "new", "disk-report", "--dir", str(tmp_path / "x" / "y"), cwd=tmp_path)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "types: [command]" in (tmp_path / "x" / "y" / "plugin.yaml").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plugin", "new", "Bad_Name"], "error: invalid plugin name 'Bad_Name': a plugin name has"),
        (["plugin", "new", "plugin"], "error: invalid plugin name 'plugin': it is a sysops command"),
        (["plugin", "new", "serve"], "error: invalid plugin name 'serve': it is a sysops command"),
        (["plugin", "new", "taken"], "error: 'taken': already exists"),
        (["plugin", "new", "fresh", "--dir", "taken"], "error: 'taken': already exists"),
        (["plugin", "new", "fresh", "--type", "daemon"], "'daemon' is not one of 'command', 'service'"),
    ],
)
def test_plugin_new_refuses_in_one_line_with_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    refused = sysops(*args, cwd=tmp_path)
    assert refused.returncode == 2
    assert message in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "Traceback" not in refused.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["taken"]
    assert list((tmp_path / "taken").iterdir()) == []
