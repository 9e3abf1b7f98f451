"""Install records, source kinds, package inspection and breaking versions: the pure logic of plugin install."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest
from sysops.core.manifest import Manifest
from sysops.distribution.installs import InstallRecord, load_installs, remove_install, save_install, tier_of
from sysops.distribution.packages import inspect_package, package_dir_of
from sysops.distribution.sources import Fetched, classify, fetch_local, is_project, remove_leftovers, requirement_of
from sysops.distribution.upgrade import choose_upgrade, crossed_breaking_versions
from sysops.errors import ManifestError, NotFoundError, UsageError

DIGEST = "sha256:" + "a" * 64


def test_records_round_trip_private_and_tier_defaults_to_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert load_installs(home) == {} and tier_of(home, "x") == "private"
    record = InstallRecord("x", "x==1.0", "pip", "1.0.0", "community", "/d")
    save_install(home, record)
    assert load_installs(home) == {"x": record} and tier_of(home, "x") == "community"
    assert stat.S_IMODE((home / "installs.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    remove_install(home, "x")
    remove_install(home, "x")  # nothing to remove: no error
    assert load_installs(home) == {}


def _entry(**changes: object) -> str:
    entry = {"name": "x", "spec": "", "kind": "pip", "version": "", "tier": "private", "directory": "", **changes}
    return json.dumps({"installs": {"x": entry}})


@pytest.mark.parametrize(
    "text",
    [
        "{bad json",
        "[]",
        '{"installs": []}',
        '{"installs": {"x": "s"}}',
        _entry(name="y"),
        _entry(kind="ftp"),
        _entry(tier="root"),
        _entry(spec=1),
        _entry(evil="1"),
        _entry(spec="s\x1b[2J"),  # a pip record whose spec is no requirement: upgrade and ls --outdated blamed SPEC
        _entry(kind="index", spec="not a requirement"),
    ],
)
def test_a_damaged_record_file_is_refused_in_one_line(tmp_path: Path, text: str) -> None:
    tmp_path.joinpath("installs.json").write_text(text)
    with pytest.raises(UsageError) as caught:
        load_installs(tmp_path)
    assert "installs.json: not a valid install record file" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("hello", "pip"),
        ("hello==1.0", "pip"),
        ("git+https://example.invalid/r.git@v1", "git"),
        ("./plugin", "path"),
        ("/abs/plugin", "path"),
        ("oci://127.0.0.1:5000/sysops-plugins/x@" + DIGEST, "oci"),
        ("127.0.0.1:5000/sysops-plugins/x@" + DIGEST, "oci"),
    ],
)
def test_specs_are_classified(spec: str, kind: str) -> None:
    assert classify(spec) == kind


def test_a_bad_requirement_is_named() -> None:
    with pytest.raises(UsageError, match="'not a spec!!' is not a pip requirement"):
        requirement_of("not a spec!!")


def test_a_local_directory_is_used_in_place(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "plugin.yaml").write_text("name: p\nversion: 1.0.0\nentrypoint: m:P\n")
    assert fetch_local(tmp_path / "p").plugin_dir == (tmp_path / "p").resolve()
    assert not is_project(tmp_path / "p")
    (tmp_path / "q" / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "q" / "pyproject.toml").write_text("")
    (tmp_path / "q" / "src" / "pkg" / "plugin.yaml").write_text("name: q\nversion: 1.0.0\nentrypoint: m:P\n")
    assert is_project(tmp_path / "q")
    assert fetch_local(tmp_path / "q").plugin_dir == (tmp_path / "q" / "src" / "pkg").resolve()
    with pytest.raises(NotFoundError):
        fetch_local(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match=r"no plugin\.yaml"):
        fetch_local(tmp_path / "empty")


def _package(root: Path, *, name: str, entry: str = "pkg", yaml_in: str = "pkg") -> Path:
    dist_info = root / "dist-1.0.dist-info"  # the name inside METADATA is the one read
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(f"[sysops.plugins]\np = {entry}\n")
    (dist_info / "RECORD").write_text(f"{yaml_in}/plugin.yaml,,\npkg/__init__.py,,\n")
    (root / "pkg").mkdir()
    (root / "pkg" / "plugin.yaml").write_text("name: p\nversion: 1.0.0\nentrypoint: m:P\n")
    return root


def test_package_inspection_finds_the_plugin_directory_and_refuses_hostile_ones(tmp_path: Path) -> None:
    package = inspect_package(_package(tmp_path / "good", name="Good_Dist"))
    assert (package.distribution, package.version) == ("good-dist", "1.0")
    assert package.plugin_dir == (tmp_path / "good" / "pkg").resolve()
    with pytest.raises(ManifestError, match="not a valid package name"):
        inspect_package(_package(tmp_path / "bad", name="../escape"))
    with pytest.raises(ManifestError, match=r"ships no plugin\.yaml"):
        inspect_package(_package(tmp_path / "elsewhere", name="d", yaml_in="other"))
    with pytest.raises(ManifestError, match="found 0"):
        inspect_package(tmp_path / "nothing")
    home = tmp_path / "home"
    assert package_dir_of(home, home / "packages" / "d" / "pkg") == home / "packages" / "d"
    assert package_dir_of(home, home / "packages" / ".staging-1" / "pkg") is None
    assert package_dir_of(home, tmp_path / "elsewhere") is None


def test_breaking_versions_crossed_are_those_above_the_installed_one() -> None:
    manifest = Manifest.model_validate(
        {"name": "p", "version": "3.0.0", "entrypoint": "m:P", "breaking_versions": ["1.0.0", "2.0.0", "3.0.0"]}
    )
    candidate = Fetched(Path("/p"), manifest)
    assert crossed_breaking_versions("1.5.0", candidate) == ["2.0.0", "3.0.0"]
    assert crossed_breaking_versions("3.0.0", candidate) == []
    assert json.dumps(crossed_breaking_versions("0.1", candidate)) == '["1.0.0", "2.0.0", "3.0.0"]'


def _plugin_dir(directory: Path, version: str, extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "plugin.yaml").write_text(f"name: p\nversion: {version}\nentrypoint: m:P\n{extra}")
    return directory


def test_a_directory_upgrade_honours_breaking_versions_and_warns_on_deprecated(tmp_path: Path) -> None:
    directory = _plugin_dir(tmp_path / "p", "1.0.0")
    record = InstallRecord("p", str(directory), "path", "1.0.0", "private", str(directory))
    home = tmp_path / "home"
    assert choose_upgrade(home, record).fetched is None  # same version: nothing to do
    _plugin_dir(directory, "2.0.0", "breaking_versions: ['2.0.0']\nstage: deprecated\n")
    with pytest.raises(UsageError, match=r"from 1\.0\.0 to 2\.0\.0 crosses breaking version 2\.0\.0"):
        choose_upgrade(home, record)
    choice = choose_upgrade(home, record, allow_breaking=True)
    assert choice.fetched is not None and choice.fetched.manifest.version == "2.0.0"
    assert choice.warnings == ["p 2.0.0 is deprecated"]
    oci = InstallRecord("p", "r@" + DIGEST, "oci", "1.0.0", "community", "", image="r@" + DIGEST)
    with pytest.raises(UsageError, match="pinned by digest"):
        choose_upgrade(home, oci)


def test_a_file_is_not_a_plugin_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ManifestError, match="a file, not a plugin directory"):
        fetch_local(tmp_path / "notes.txt")


def test_leftovers_of_interrupted_installs_are_removed_once_old(tmp_path: Path) -> None:
    old, recent, package = tmp_path / ".staging-old", tmp_path / ".previous-new", tmp_path / "dist"
    for directory in (old, recent, package):
        directory.mkdir()
    os.utime(old, (0, 0))
    os.utime(package, (0, 0))
    remove_leftovers(tmp_path)
    assert not old.exists() and recent.is_dir() and package.is_dir()


def test_installs_of_one_installation_take_turns(tmp_path: Path) -> None:
    from sysops.cli.install_cmd import installing

    entered = threading.Event()

    def second() -> None:
        with installing(tmp_path / "home"):
            entered.set()

    with installing(tmp_path / "home"):
        thread = threading.Thread(target=second)
        thread.start()
        assert not entered.wait(0.5)  # the second waits while the first installs
    assert entered.wait(5)
    thread.join(5)
    assert list((tmp_path / "home").iterdir()) == []  # the lock file goes with its holder


def test_package_whose_entry_point_and_record_point_outside_it_is_refused(tmp_path: Path) -> None:
    """A wheel's RECORD and entry point are the author's text: an absolute path (or a symlinked package) must
    not make sysops build a plugin directory elsewhere on the host."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "plugin.yaml").write_text("name: p\nversion: 1.0.0\nentrypoint: m:P\n")
    absolute = _package(tmp_path / "absolute", name="d", entry=str(outside), yaml_in=str(outside))
    with pytest.raises(ManifestError, match="outside its package directory"):
        inspect_package(absolute)
    linked = _package(tmp_path / "linked", name="d", entry="lnk", yaml_in="lnk")
    (linked / "lnk").symlink_to(outside)
    with pytest.raises(ManifestError, match="outside its package directory"):
        inspect_package(linked)


def test_uninstall_of_a_plugin_that_is_not_running_removes_its_package_and_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control API reports 'no plugin named x' as a SysopsError with exit code 8 (cli/remote.py), not as
    NotFoundError: a plugin brought down (or that never started) must still be uninstallable."""
    from sysops.cli import install_cmd
    from sysops.distribution.packages import packages_root
    from sysops.errors import ExitCode, SysopsError

    class StoppedHost:
        def down(self, name: str, *, purge: bool) -> None:
            error = SysopsError(f"no plugin named {name!r}")
            error.exit_code = ExitCode.NOT_FOUND
            raise error

    home = tmp_path / "home"
    monkeypatch.setenv("SYSOPS_HOME", str(home))
    monkeypatch.setattr(install_cmd, "control_client", StoppedHost)
    plugin_dir = packages_root(home) / "x_dist" / "x"
    plugin_dir.mkdir(parents=True)
    save_install(home, InstallRecord("x", "x==1.0", "pip", "1.0.0", "community", str(plugin_dir)))
    install_cmd.uninstall("x")
    assert load_installs(home) == {} and not (packages_root(home) / "x_dist").exists()


def test_a_bare_name_is_a_requirement_even_where_a_directory_has_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`plugin install hello` in a directory others can write (/tmp) must not build their ./hello as a
    private plugin (unsigned allowed): a path is written as one (./hello, /abs), as pip requires."""
    (tmp_path / "hello").mkdir()
    (tmp_path / "hello" / "plugin.yaml").write_text("name: hello\nversion: 1.0.0\nentrypoint: m:P\n")
    (tmp_path / "x-1.0-py3-none-any.whl").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert classify("hello") == "pip"
    assert classify("./hello") == "path"
    assert classify("x-1.0-py3-none-any.whl") == "path"  # a wheel file typed by name stays one


def test_an_upgrade_that_is_another_plugin_is_refused(tmp_path: Path) -> None:
    """The record (and so the trust tier and the held-upgrade review) is the installed plugin's: a new version
    naming another plugin would be brought up as a plugin never installed (tier private, a first start never
    held). Every source's candidate passes the same check; a directory source shows it without pip."""
    directory = _plugin_dir(tmp_path / "p", "1.0.0")
    record = InstallRecord("p", "p==1.0.0", "path", "1.0.0", "community", str(directory))
    (directory / "plugin.yaml").write_text("name: other\nversion: 2.0.0\nentrypoint: m:P\n")
    with pytest.raises(ManifestError, match=r"p 2\.0\.0 is plugin 'other', not p"):
        choose_upgrade(tmp_path / "home", record)


def test_installing_another_source_under_an_installed_plugins_name_is_refused(tmp_path: Path) -> None:
    """`plugin install foo` of a package whose plugin.yaml names the installed plugin bar would replace bar,
    its record (tier) and code, keeping its data and secrets, unreviewed when it asks nothing more."""
    from sysops.distribution.packages import packages_root
    from sysops.distribution.sources import refuse_another_source

    home = tmp_path / "home"
    bar_dir = packages_root(home) / "bar-dist" / "bar"
    save_install(home, InstallRecord("bar", "bar", "index", "1.0.0", "official", str(bar_dir), index="main"))
    manifest = Manifest.model_validate({"name": "bar", "version": "2.0.0", "entrypoint": "m:P"})
    staged = tmp_path / "home" / "packages" / ".staging-1" / "bar"
    with pytest.raises(UsageError, match=r"plugin bar is installed already from 'bar' \(index, tier official\)"):
        refuse_another_source(home, Fetched(staged, manifest, "foo-dist", "2.0.0", staged.parent))
    refuse_another_source(home, Fetched(staged, manifest, "bar-dist", "2.0.0", staged.parent))  # same package
    refuse_another_source(home, Fetched(staged, manifest.model_copy(update={"name": "baz"}), "foo-dist"))
    local = tmp_path / "local"
    save_install(home, InstallRecord("bar", str(local), "path", "1.0.0", "private", str(local)))
    refuse_another_source(home, Fetched(local, manifest))  # the same directory again
    with pytest.raises(UsageError, match="installed already"):
        refuse_another_source(home, Fetched(tmp_path / "elsewhere", manifest))


def test_upgrade_of_a_plugin_whose_index_was_removed_says_so(tmp_path: Path) -> None:
    """It said '1.0.0 is up to date': no configured index listed anything newer, since none was configured."""
    record = InstallRecord("x", "x", "index", "1.0.0", "community", "/nonexistent", index="gone")
    with pytest.raises(NotFoundError, match=r"x was installed from index 'gone', which is no longer configured"):
        choose_upgrade(tmp_path / "home", record)


def test_a_failed_git_fetch_names_gits_reason() -> None:
    """pip's last lines are a 'note: This error originates from a subprocess' that says nothing of the cause."""
    from sysops.distribution.sources import _pip_failure

    stderr = """  Running command git clone --filter=blob:none --quiet file:///nonexist /tmp/pip-req-build-x
  fatal: '/nonexist' does not appear to be a git repository
  fatal: Could not read from remote repository.
  error: subprocess-exited-with-error
  \u00d7 git clone --filter=blob:none --quiet file:///nonexist /tmp/pip-req-build-x did not run successfully.
  note: This error originates from a subprocess, and is likely not a problem with pip.
error: subprocess-exited-with-error
note: This error originates from a subprocess, and is likely not a problem with pip.
"""
    message = str(_pip_failure("git+file:///nonexist@v1", stderr))
    assert message.startswith("cannot install git+file:///nonexist@v1: fatal: '/nonexist' does not appear to be a git")


def test_an_index_install_upgrades_only_from_its_own_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A community index listing a newer 'x' must not upgrade the 'x' installed from the official index (the
    record keeps tier official): versions are taken from the record's index only."""
    from sysops.distribution import index_client, upgrade
    from sysops.distribution.index_client import IndexEntry, find
    from sysops.distribution.index_registry import IndexConfig

    indexes = [IndexConfig("street", "https://street.example", "community"),
               IndexConfig("vendor", "https://vendor.example", "official")]  # fmt: skip
    listed = {
        "street": [IndexEntry("street", "community", "x", "9.0.0", "x==9.0.0")],
        "vendor": [IndexEntry("vendor", "official", "x", "1.0.0", "x==1.0.0")],
    }
    for module in (index_client, upgrade):
        monkeypatch.setattr(module, "load_indexes", lambda home: indexes)
    monkeypatch.setattr(index_client, "index_entries", lambda home, index: listed[index.name])
    fetched: list[str] = []
    monkeypatch.setattr(upgrade, "fetch_with_pip", lambda home, spec, **kw: fetched.append(spec))
    home = tmp_path / "home"
    assert find(home, "x", ">1.0.0").version == "9.0.0"  # type: ignore[union-attr]  # a new install: first index
    assert find(home, "x", ">1.0.0", index_name="vendor") is None
    record = InstallRecord("x", "x", "index", "1.0.0", "official", "/nonexistent", index="vendor")
    assert choose_upgrade(home, record).fetched is None and fetched == []
