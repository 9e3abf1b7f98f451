"""Hostile input, one defect per test: plugin names that are paths, YAML bombs, bad bytes, wrong types."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sysops.cli.main import main
from sysops.core import safe_yaml
from sysops.core.manifest import MANIFEST_FILE, load_manifest, parse_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.core.policy import load_policy
from sysops.errors import ExitCode, ManifestError, PluginDefinitionError, PolicyDeniedError, SysopsError, UsageError
from sysops.imaging.image import plugin_requirements
from sysops.runtime.fake import FakeDriver
from sysops.settings import Settings

VALID = "name: demo\nversion: 1.2.3\nentrypoint: demo.plugin:Demo\n"
BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
)


def _write(directory: Path, content: str | bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MANIFEST_FILE
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return directory


def _refused(directory: Path, *fragments: str) -> str:
    with pytest.raises(ManifestError) as caught:
        load_manifest(directory)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 600, message
    assert message.startswith(f"{directory / MANIFEST_FILE}: "), message
    for fragment in fragments:
        assert fragment in message, message
    assert caught.value.exit_code == ExitCode.INVALID_PLUGIN
    return message


@pytest.fixture
def orchestrator(settings: Settings) -> Iterator[Orchestrator]:
    orchestrator = Orchestrator(settings, FakeDriver())
    yield orchestrator
    orchestrator.close()


# item 4: plugin names become paths
@pytest.mark.parametrize("name", ["/tmp/x/victim", "../victim", "Demo", "demo\n", "", "a" * 64, "\udcff", "-a"])
def test_orchestrator_refuses_names_that_are_not_dns_labels(orchestrator: Orchestrator, name: str) -> None:
    for operation in (
        lambda: orchestrator.down(name),
        lambda: orchestrator.rollback(name),
        lambda: orchestrator.status(name),
        lambda: orchestrator.history(name),
        lambda: orchestrator.logs(name),
    ):
        with pytest.raises(UsageError, match="invalid plugin name"):
            operation()


def test_down_with_a_path_for_a_name_leaves_the_file_alone(orchestrator: Orchestrator, tmp_path: Path) -> None:
    victim = tmp_path / "poetry.lock"
    victim.write_text("precious\n")
    with pytest.raises(UsageError):
        orchestrator.down(str(tmp_path / "poetry"))
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("command", ["down", "status", "logs", "history", "rollback"])
def test_cli_refuses_a_bad_name_with_exit_2_and_one_line(
    command: str, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = tmp_path / "poetry.lock"
    victim.write_text("precious\n")
    assert main(["plugin", command, str(tmp_path / "poetry")]) == ExitCode.USAGE
    assert main(["plugin", command, "\udcff"]) == ExitCode.USAGE
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(line.startswith("error: invalid plugin name '") for line in lines), lines
    assert "'\\udcff'" in lines[1]
    assert victim.read_text() == "precious\n"


def test_reconcile_ignores_a_forged_plugin_label(orchestrator: Orchestrator, settings: Settings) -> None:
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    forged = {"sysops.installation": settings.installation_id, "sysops.plugin": "../../evil"}
    driver.list_instances = lambda labels: [type("Forged", (), {"labels": forged, "handle": "x", "running": True})()]  # type: ignore[method-assign]
    orchestrator.reconcile()
    assert not (settings.home.parent / "evil.lock").exists()


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


# item 16: alias bombs, size
def test_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    _refused(_write(tmp_path / "p", VALID + BOMB), "expands to more than 10000 values")
    assert time.monotonic() - started < 2


def test_alias_bomb_inside_readiness_arguments_is_refused(tmp_path: Path) -> None:
    nested = "".join(f"  {line}\n" for line in BOMB.splitlines())
    _refused(_write(tmp_path / "p", VALID + "readiness:\n arguments:\n" + nested), "expands to more than")


def test_too_many_aliases_are_refused(tmp_path: Path) -> None:
    aliases = ",".join(["*x"] * 100)
    _refused(_write(tmp_path / "p", VALID + f"description: &x d\npermissions: [{aliases}]\n"), "more than 64 aliases")


def test_a_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    started = time.monotonic()
    _refused(_write(tmp_path / "p", VALID + "# " + "x" * 20_000_000 + "\n"), "larger than 64 KiB")
    assert time.monotonic() - started < 2


def test_echoed_values_are_capped_and_escaped() -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest({"name": "x" * 10_000 + "\n\x1b[2J", "version": "1", "entrypoint": "a:B"}, "p/plugin.yaml")
    message = str(caught.value)
    assert len(message) < 300 and "\n" not in message and "\x1b" not in message, message


# item 17: internal errors instead of exit 4
@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"name: d\xffmo\n", "not UTF-8 text"),
        (VALID.encode("utf-16"), "not UTF-8 text"),
        (b"\x00\x01\x02binary", "not valid YAML"),
        ("x: " + "[" * 5000 + "]" * 5000, "nested deeper than 32 levels"),
        ("x: " + "{a: " * 40 + "1" + "}" * 40, "nested deeper than 32 levels"),
        (VALID + "description: " + "9" * 5000 + "\n", "a value cannot be read"),
        (VALID + "description: 2020-13-45\n", "a value cannot be read"),
        (VALID + "!!int : x\n", "a value cannot be read"),  # empty !!int: PyYAML raised IndexError (fuzz)
    ],
)
def test_unreadable_bytes_and_structures_are_exit_4(tmp_path: Path, content: str | bytes, fragment: str) -> None:
    _refused(_write(tmp_path / "p", content), fragment)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"entrypoint": "a" * 1000 + ":B"}, "key 'entrypoint'"),
        ({"limits": {"disk_io_mb_per_sec": float("inf")}}, "finite number"),
        ({"limits": {"cpu_percent": float("nan")}}, "finite number"),
        ({"network": [{"host": "0.0.0.0/0"}]}, "allows every address; list the hosts"),
        ({"network": [{"host": "::/0"}]}, "allows every address"),
        ({"network": [{"host": "a..b"}]}, "host name of dot-separated labels"),
        ({"network": [{"host": "a" * 64 + ".com"}]}, "host name of dot-separated labels"),
        ({"network": [{"host": "-a.com"}]}, "host name of dot-separated labels"),
        ({"readiness": {"arguments": {"x": _nested(40)}}}, "nested deeper than 32 levels"),
    ],
)
def test_values_that_crashed_later_are_refused_at_load(extra: dict[str, object], fragment: str) -> None:
    with pytest.raises(ManifestError, match=None) as caught:
        parse_manifest({"name": "demo", "version": "1.0", "entrypoint": "demo.plugin:Demo", **extra}, "p/plugin.yaml")
    assert fragment in str(caught.value)


def test_unreadable_manifest_is_exit_4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = _write(tmp_path / "p", VALID)

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(safe_yaml, "open", denied, raising=False)
    _refused(directory, "cannot read: Permission denied")


def test_overlong_plugin_path_is_exit_4(tmp_path: Path) -> None:
    with pytest.raises(ManifestError):
        load_manifest(tmp_path / ("x" * 5000))


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"[project]\ndependencies = ['r\xe9quests']\n", "not UTF-8"),
        ("[project]\ndependencies = 'requests'\n".encode("utf-16"), "not UTF-8"),
        (b"project = 1\n", "must be a list of requirement strings"),
        (b"[project]\ndependencies = ['--index-url=http://evil']\n", "must be a list of requirement strings"),
        (b"a = " + b"[" * 3000 + b"]" * 3000, "not valid TOML"),
    ],
)
def test_bad_pyproject_is_exit_4(tmp_path: Path, content: bytes, fragment: str) -> None:
    (tmp_path / "pyproject.toml").write_bytes(content)
    with pytest.raises(PluginDefinitionError, match=fragment) as caught:
        plugin_requirements(tmp_path)
    assert caught.value.exit_code == ExitCode.INVALID_PLUGIN and "\n" not in str(caught.value)


# item 18: accepted but wrong
def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    content = VALID + "limits: {memory_mb: 64}\nlimits: {cpu_percent: 20}\n"
    _refused(_write(tmp_path / "p", content), "not valid YAML at line 5: duplicate key 'limits'")


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    _refused(_write(tmp_path / "p", VALID + "readiness: {arguments: &a {x: *a}}\n"), "nested deeper than 32")


def test_merge_keys_may_still_override(tmp_path: Path) -> None:
    content = VALID + "x-base: &base {memory_mb: 64, pids: 32}\n"
    manifest_dir = _write(tmp_path / "p", content.replace("x-base", "readiness") + "limits: {<<: *base, pids: 64}\n")
    with pytest.raises(ManifestError, match=r"unknown key 'readiness\.memory_mb'"):
        load_manifest(manifest_dir)  # the anchor's home must be a valid key; the merge itself parses


@pytest.mark.parametrize(
    ("limits", "fragment"),
    [
        ("{cpu_percent: true}", "key 'limits.cpu_percent': Input should be a valid number (got True)"),
        ("{memory_mb: yes}", "key 'limits.memory_mb'"),
        ("{pids: '64'}", "key 'limits.pids': Input should be a valid integer (got '64')"),
        ("{memory_mb: 64.0}", "key 'limits.memory_mb'"),
        ("{disk_io_mb_per_sec: 1.0e-9}", "greater than or equal to 0.1"),
        ("{disk_io_mb_per_sec: 1e-9}", "key 'limits.disk_io_mb_per_sec': Input should be a valid number (got '1e-9')"),
        ("{disk_io_mb_per_sec: 0.000001}", "greater than or equal to 0.1"),
        ("{cpu_percent: 0.5}", "greater than or equal to 1"),
        ("{network_connections: 99999999999}", "less than or equal to 1000000"),
    ],
)
def test_limits_are_strict_and_within_what_the_engine_applies(tmp_path: Path, limits: str, fragment: str) -> None:
    _refused(_write(tmp_path / "p", VALID + f"limits: {limits}\n"), fragment)


@pytest.mark.parametrize(
    "line",
    [
        'entrypoint: "demo.plugin:Demo\\n"',
        'version: "1.2.3\\n"',
        'version: " 1.2.3"',
        'permissions: ["deployment.execute\\n"]',
        'requires: ["monitoring>=1.0\\n"]',
        'compatibility: {sysops: ">=0.1\\n"}',
        'readiness: {command: "selftest\\nx"}',
        'entrypoint: "démo.plugin:Demo"',
        'entrypoint: "class.plugin:Demo"',
    ],
)
def test_trailing_newlines_and_odd_characters_do_not_pass_patterns(tmp_path: Path, line: str) -> None:
    key = line.split(":", 1)[0]
    content = "\n".join(entry for entry in VALID.splitlines() if not entry.startswith(f"{key}:")) + f"\n{line}\n"
    _refused(_write(tmp_path / "p", content), f"key '{key}")


@pytest.mark.parametrize("host", ["0x7f.1", "127.1", "0177.0.0.1", "2130706433", "0x7f000001", "1.2.3.4.5"])
def test_obfuscated_ipv4_hosts_are_refused(host: str) -> None:
    with pytest.raises(ManifestError, match="non-standard form; write it as four decimals"):
        parse_manifest({"name": "d", "version": "1", "entrypoint": "a:B", "network": [{"host": host}]}, "p")


@pytest.mark.parametrize("host", ["127.0.0.1", "10.0.0.0/8", "::1", "2001:db8::/32", "api.example.com", "db-1", "x1"])
def test_ordinary_hosts_still_pass(host: str) -> None:
    manifest = parse_manifest({"name": "d", "version": "1", "entrypoint": "a:B", "network": [{"host": host}]}, "p")
    assert manifest.network != "none" and manifest.network[0].host == host


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("caps: {cpu_percent: 0.5}\n", "key 'caps.cpu_percent'"),
        ("defaults: {memory_mb: true}\n", "key 'defaults.memory_mb'"),
        ("caps: {disk_io_mb_per_sec: .inf}\n", "key 'caps.disk_io_mb_per_sec'"),
        ("caps: {pids: 64}\ncaps: {pids: 1024}\n", "duplicate key 'caps'"),
        ("caps: &a [*a]\n", "key 'caps'"),
        ("defaults: " + "[" * 100 + "]" * 100, "nested deeper"),
    ],
)
def test_policy_file_gets_the_same_bounds(home: Path, content: str, fragment: str) -> None:
    home.mkdir(parents=True)
    (home / "policy.yaml").write_text(content)
    with pytest.raises(PolicyDeniedError, match=None) as caught:
        load_policy(home)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_every_refusal_is_a_sysops_error_with_one_line() -> None:
    for text in ("a: *unknown", "? [a]\n: 1", "!!python/object:os.system x", "a: !!binary '@@'", "\t- x"):
        try:
            safe_yaml.load(text)
        except (safe_yaml.InputLimitError, Exception) as exc:
            assert isinstance(exc, safe_yaml.InputLimitError | safe_yaml.yaml.YAMLError), type(exc)
            assert not isinstance(exc, SysopsError)


def test_an_unknown_key_with_control_characters_is_echoed_on_one_line(tmp_path: Path) -> None:
    """A key is plugin text too: `{'compatibility': {'\\n': None}}` gave a two-line error."""
    with pytest.raises(ManifestError) as caught:
        parse_manifest(
            {"name": "demo", "version": "1.0.0", "entrypoint": "demo.plugin:P", "compatibility": {"\n\x1b[2J": None}},
            str(tmp_path / "plugin.yaml"),
        )
    message = str(caught.value)
    assert "\n" not in message and "\x1b" not in message and "unknown key 'compatibility.\\n\\x1b[2J'" in message
