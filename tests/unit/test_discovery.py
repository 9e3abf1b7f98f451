"""Discovery without an engine: the installation config reader, the directory and entry-point scanners,
validation and de-duplication, `find_discovered`, and `sysops plugin discover`'s output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sysops.core import installation_config
from sysops.core.installation_config import ConfigFileError, plugin_path_dirs, read_installation_config
from sysops.discovery import directories as directories_module
from sysops.discovery import discover, find_discovered
from sysops.discovery import entry_points as entry_points_module
from sysops.discovery.directories import scan_directory
from sysops.discovery.entry_points import scan_entry_points
from sysops.errors import ExitCode, NotFoundError

from tests.plugin_packages import declare_entry_point

SYSOPS = str(Path(sys.executable).with_name("sysops"))


def write_manifest(directory: Path, name: str, version: str = "1.0.0", extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "plugin.yaml").write_text(f"name: {name}\nversion: {version}\nentrypoint: p.plugin:P\n{extra}")
    return directory


@pytest.fixture
def clean_env(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No SYSOPS_SYSTEM_CONFIG / SYSOPS_PLUGIN_PATH from the environment; the unit home's config.yaml is the file."""
    monkeypatch.delenv(installation_config.CONFIG_VARIABLE, raising=False)
    monkeypatch.delenv(installation_config.PLUGIN_PATH_VARIABLE, raising=False)
    home.mkdir(parents=True, exist_ok=True)
    return home / "config.yaml"


# --- the installation config file ---------------------------------------------------------------------------


def test_missing_default_file_is_an_empty_configuration(clean_env: Path) -> None:
    config = read_installation_config()
    assert (config.path, config.exists, config.sections, config.plugin_dirs) == (clean_env, False, {}, ())


def test_plugin_dirs_are_relative_to_the_file_and_other_sections_pass_through(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    clean_env.write_text("plugin_dirs: [plugins, ../shared, /abs/dir, ~/mine]\nbackup: {retention_days: 3}\n")
    config = read_installation_config()
    assert config.plugin_dirs == (
        clean_env.parent / "plugins",
        clean_env.parent.parent / "shared",
        Path("/abs/dir"),
        tmp_path / "user" / "mine",
    )
    assert config.sections["backup"] == {"retention_days": 3}


def test_the_cli_contexts_file_is_not_the_installation_config(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SYSOPS_CONFIG names the CLI's contexts file (cli/contexts.py): it must not become the installation's."""
    contexts = tmp_path / "contexts.yaml"
    contexts.write_text("current-context: prod\ncontexts: {}\n")
    clean_env.write_text("plugin_dirs: [mine]\n")
    monkeypatch.setenv("SYSOPS_CONFIG", str(contexts))
    assert read_installation_config().plugin_dirs == (clean_env.parent / "mine",)


def test_sysops_system_config_names_the_file(clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    elsewhere = tmp_path / "etc" / "sysops.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text("plugin_dirs: [p]\n")
    clean_env.write_text("plugin_dirs: [not-this-one]\n")
    monkeypatch.setenv("SYSOPS_SYSTEM_CONFIG", str(elsewhere))
    assert read_installation_config().plugin_dirs == (tmp_path / "etc" / "p",)
    monkeypatch.setenv("SYSOPS_SYSTEM_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigFileError, match=r"missing\.yaml: no such configuration file") as raised:
        read_installation_config()
    assert raised.value.exit_code == ExitCode.INVALID_PLUGIN


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("plugin_dirs: 3\n", "key 'plugin_dirs': must be a list of directory paths (got 3)"),
        ("plugin_dirs: [a, 7]\n", "key 'plugin_dirs[1]': must be a directory path, a non-empty string (got 7)"),
        ("plugin_dirs: [a, '']\n", "key 'plugin_dirs[1]': must be a directory path"),
        ("- a\n- b\n", "expected a mapping of sections"),
        ("plugin_dirs: [a\n", "not valid YAML"),
        ("plugin_dirs: [a]\nplugin_dirs: [b]\n", "duplicate key 'plugin_dirs'"),
        ("1: x\n", "section names are strings"),
    ],
)
def test_a_bad_file_is_one_line_naming_file_and_key(clean_env: Path, text: str, message: str) -> None:
    clean_env.write_text(text)
    with pytest.raises(ConfigFileError) as raised:
        read_installation_config()
    line = str(raised.value)
    assert line.startswith(f"{clean_env}: ") and message in line and "\n" not in line
    assert raised.value.exit_code == ExitCode.INVALID_PLUGIN


def test_plugin_path_is_split_like_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SYSOPS_PLUGIN_PATH", os.pathsep.join(["/a", "", "rel", " "]))
    assert plugin_path_dirs() == (Path("/a"), tmp_path / "rel")


# --- the directory scanner ------------------------------------------------------------------------------------


def test_a_directory_and_its_subdirectories_one_level_deep(tmp_path: Path) -> None:
    root = write_manifest(tmp_path / "root", "top")
    write_manifest(root / "one", "one")
    write_manifest(root / "nested" / "deeper", "deeper")  # two levels down: not a plugin of this directory
    (root / ".hidden").mkdir()
    (root / "__pycache__").mkdir()
    (root / "notes.txt").write_text("not a directory")
    scan = scan_directory(root, "test")
    assert [location.path for location in scan.locations] == [root, root / "one"]
    assert [location.origin for location in scan.locations] == [f"directory {root}", f"directory {root / 'one'}"]
    assert [(entry.where, entry.why) for entry in scan.skipped] == [(str(root / "nested"), "no plugin.yaml")]


def test_links_are_followed_one_level_and_loops_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    target = write_manifest(tmp_path / "checkout", "linked")
    (root / "linked").symlink_to(target)
    (root / "loop-a").symlink_to(root / "loop-b")
    (root / "loop-b").symlink_to(root / "loop-a")
    (root / "self").symlink_to(root)
    scan = scan_directory(root, "test")
    assert [location.path for location in scan.locations] == [root / "linked"]
    reasons = {entry.where: entry.why for entry in scan.skipped}
    assert reasons[str(root / "loop-a")].startswith("cannot read: Too many levels of symbolic links")
    assert reasons[str(root / "loop-b")].startswith("cannot read: Too many levels of symbolic links")
    assert reasons[str(root / "self")] == "no plugin.yaml"
    looped = tmp_path / "looped"
    looped.symlink_to(looped)
    assert [entry.why for entry in scan_directory(looped, "test").skipped] == [
        "cannot read: Too many levels of symbolic links"
    ]


def test_missing_unreadable_and_non_directories_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert [e.why for e in scan_directory(tmp_path / "missing", "t").skipped] == ["no such directory"]
    (tmp_path / "file").write_text("x")
    assert [e.why for e in scan_directory(tmp_path / "file", "t").skipped] == ["not a directory"]
    locked = tmp_path / "locked"
    locked.mkdir()

    def refuse(path: object) -> object:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(directories_module.os, "scandir", refuse)  # as root, mode 000 would still be readable
    assert [e.why for e in scan_directory(locked, "t").skipped] == ["cannot read: Permission denied"]


def test_the_scan_of_one_directory_is_bounded_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(directories_module, "MAX_ENTRIES_PER_DIRECTORY", 5)
    for index in range(12):
        write_manifest(tmp_path / f"p{index:02}", f"p{index:02}")
    scan = scan_directory(tmp_path, "test")
    assert len(scan.locations) == 5
    assert [(e.where, e.why) for e in scan.skipped] == [
        (str(tmp_path), "more than 5 entries: only the first 5 were scanned")
    ]


def test_the_number_of_directories_is_bounded_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(directories_module, "MAX_DIRECTORIES", 2)
    listed = [(write_manifest(tmp_path / f"d{index}", f"d{index}"), "SYSOPS_PLUGIN_PATH") for index in range(3)]
    scan = directories_module.scan_directories(listed)
    assert [location.path for location in scan.locations] == [tmp_path / "d0", tmp_path / "d1"]
    assert [(e.where, e.why) for e in scan.skipped] == [
        ("SYSOPS_PLUGIN_PATH", "more than 2 plugin directories: only the first were scanned")
    ]


# --- the entry-point scanner ----------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path where the tests 'install' distributions."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return path


def write_package(site: Path, package: str, *, manifest_in: str = "", name: str = "greeter") -> Path:
    """A package whose __init__ fails if imported; plugin.yaml in `package/<manifest_in>`."""
    directory = site / package
    directory.mkdir()
    (directory / "__init__.py").write_text("raise RuntimeError('discovery imported plugin code')\n")
    write_manifest(directory / manifest_in if manifest_in else directory, name)
    return directory


def test_an_entry_point_package_is_found_without_importing_it(site: Path) -> None:
    package = write_package(site, "greeter_sysops")
    declare_entry_point(site, distribution="greeter-dist", name="greeter", value="greeter_sysops")
    scan = scan_entry_points()
    ours = [location for location in scan.locations if location.path == package]
    assert len(ours) == 1
    assert ours[0].origin == "package greeter-dist"
    assert ours[0].source == "entry point greeter of greeter-dist 1.0"
    assert "greeter_sysops" not in sys.modules


def test_the_named_module_directory_or_the_nearest_above_it_holds_the_manifest(site: Path) -> None:
    package = write_package(site, "nested_sysops", manifest_in="bundle", name="nested")
    (package / "bundle" / "code.py").write_text("raise RuntimeError('imported')\n")
    declare_entry_point(site, distribution="nested-dist", name="n", value="nested_sysops.bundle.code:P")
    above = write_package(site, "above_sysops", name="above")
    (above / "sub").mkdir()
    (above / "sub" / "__init__.py").write_text("")
    declare_entry_point(site, distribution="above-dist", name="a", value="above_sysops.sub")
    paths = {location.path for location in scan_entry_points().locations}
    assert {package / "bundle", above} <= paths


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("not_installed_anywhere", "package 'not_installed_anywhere' is not installed on the Python path"),
        ("bare_module", "'bare_module' is a module, not a package: plugin.yaml goes in a package directory"),
        ("no_manifest_pkg", "no plugin.yaml in the directory of 'no_manifest_pkg' or above it in "),
    ],
)
def test_entry_points_that_lead_nowhere_are_skipped_with_the_reason(site: Path, value: str, why: str) -> None:
    (site / "bare_module.py").write_text("raise RuntimeError('imported')\n")
    (site / "no_manifest_pkg").mkdir()
    (site / "no_manifest_pkg" / "__init__.py").write_text("raise RuntimeError('imported')\n")
    declare_entry_point(site, distribution="odd-dist", name="odd", value=value)
    skipped = [e for e in scan_entry_points().skipped if e.where == "entry point odd of odd-dist 1.0"]
    assert len(skipped) == 1 and skipped[0].why.startswith(why)
    assert value not in sys.modules


def test_the_number_of_entry_points_is_bounded_and_says_so(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entry_points_module, "MAX_ENTRY_POINTS", 1)
    for index in range(2):
        write_package(site, f"bounded{index}_sysops", name=f"bounded{index}")
        declare_entry_point(site, distribution=f"bounded{index}-dist", name=f"b{index}", value=f"bounded{index}_sysops")
    scan = scan_entry_points()
    assert len(scan.locations) == 1
    assert scan.skipped[0].where == "entry points sysops.plugins"
    assert scan.skipped[0].why.endswith("entry points: only the first 1 were read")


# --- discover() and find_discovered() -------------------------------------------------------------------------


def test_discover_validates_dedupes_and_finds_the_newest(
    clean_env: Path, site: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    on_path = tmp_path / "on-path"
    write_manifest(on_path / "alpha", "alpha", "1.0.0")
    configured = tmp_path / "configured"
    write_manifest(configured / "alpha-copy", "alpha", "1.0.0")  # same name and version: the first is kept
    write_manifest(configured / "alpha-two", "alpha", "2.0.0")
    write_manifest(configured / "broken", "Broken")
    monkeypatch.setenv("SYSOPS_PLUGIN_PATH", str(on_path))
    clean_env.write_text(f"plugin_dirs: [{configured}]\n")
    write_package(site, "greeter_sysops")
    declare_entry_point(site, distribution="greeter-dist", name="greeter", value="greeter_sysops")

    discovery = discover()
    found = [(p.name, p.version, p.path, p.source) for p in discovery.found if p.name in ("alpha", "greeter")]
    assert found == [
        ("alpha", "1.0.0", on_path / "alpha", "SYSOPS_PLUGIN_PATH"),
        ("alpha", "2.0.0", configured / "alpha-two", f"plugin_dirs of {clean_env}"),
        ("greeter", "1.0.0", site / "greeter_sysops", "entry point greeter of greeter-dist 1.0"),
    ]
    reasons = {entry.where: entry.why for entry in discovery.skipped}
    assert reasons[str(configured / "alpha-copy")] == (
        f"duplicate: alpha 1.0.0 is also in {on_path / 'alpha'} (SYSOPS_PLUGIN_PATH), found first and used"
    )
    assert reasons[str(configured / "broken")].startswith(f"{configured / 'broken' / 'plugin.yaml'}: key 'name'")
    assert find_discovered("alpha", discovery) == configured / "alpha-two"
    assert find_discovered("greeter") == site / "greeter_sysops"
    with pytest.raises(NotFoundError, match=r"no discovered plugin named 'nothing'.*sysops plugin discover") as raised:
        find_discovered("nothing", discovery)
    assert raised.value.exit_code == ExitCode.NOT_FOUND


def test_discover_refuses_a_bad_config_file(clean_env: Path) -> None:
    clean_env.write_text("plugin_dirs: {a: b}\n")
    with pytest.raises(ConfigFileError, match="key 'plugin_dirs'"):
        discover()


# --- sysops plugin discover ------------------------------------------------------------------------------------


def run_discover(home: Path, *args: str, plugin_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSOPS_HOME": str(home)}
    env.pop("SYSOPS_SYSTEM_CONFIG", None)
    env["SYSOPS_PLUGIN_PATH"] = str(plugin_path or "")
    return subprocess.run(
        [SYSOPS, "plugin", "discover", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_command_prints_both_tables_escaped_and_json(clean_env: Path, tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    write_manifest(plugins / "hello", "hello")
    (plugins / "evil\x1b]52;c;QUFB\x07name").mkdir()
    result = run_discover(clean_env.parent, plugin_path=plugins)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "SOURCE", "PATH"]
    assert lines[1].split() == ["hello", "1.0.0", "SYSOPS_PLUGIN_PATH", str(plugins / "hello")]
    assert "skipped:" in lines
    assert f"{plugins}/evil\\x1b]52;c;QUFB\\x07name  no plugin.yaml" in result.stdout
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout

    data = json.loads(run_discover(clean_env.parent, "-o", "json", plugin_path=plugins).stdout)
    assert [plugin["name"] for plugin in data["found"]] == ["hello"]
    assert data["found"][0]["origin"] == f"directory {plugins / 'hello'}"
    assert {"where": f"{plugins}/evil\x1b]52;c;QUFB\x07name", "why": "no plugin.yaml"} in data["skipped"]


def test_the_command_refuses_a_bad_config_file_in_one_line(clean_env: Path) -> None:
    clean_env.write_text("plugin_dirs: 3\n")
    result = run_discover(clean_env.parent)
    assert result.returncode == ExitCode.INVALID_PLUGIN
    assert result.stderr.splitlines() == [
        f"error: {clean_env}: key 'plugin_dirs': must be a list of directory paths (got 3); "
        "see docs/plugins.md (Discovery)"
    ]
