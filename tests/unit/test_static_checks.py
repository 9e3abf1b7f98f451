"""Static checks at build (sysops/checks): each manifest rule, bandit's findings with file:line, the policy that
decides what blocks, the kept report, `sysops plugin check`, and plugin directories written to hurt."""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path

import pytest
from sysops.checks import sources
from sysops.checks.findings import Finding
from sysops.checks.policy import CheckPolicy
from sysops.checks.run import analyze, check_before_build, load_report, report_path
from sysops.cli.main import main
from sysops.core.code_checks import shipped_code_findings
from sysops.core.manifest import load_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.core.policy import load_policy
from sysops.errors import ExitCode, PolicyDeniedError

ROOT = Path(__file__).resolve().parents[2]


def plugin(tmp_path: Path, code: str, manifest_extra: str = "", files: dict[str, bytes] | None = None) -> Path:
    """A plugin directory whose `pkg/plugin.py` holds `code` (dedented), plus extra files by relative name."""
    directory = tmp_path / "plug"
    (directory / "pkg").mkdir(parents=True)
    (directory / "pkg" / "plugin.py").write_text(textwrap.dedent(code))
    (directory / "plugin.yaml").write_text(
        f"name: plug\nversion: 1.0.0\ndescription: d\nentrypoint: pkg.plugin:P\n{manifest_extra}"
    )
    for name, data in (files or {}).items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    return directory


def findings_of(tmp_path: Path, code: str, manifest_extra: str = "", **kwargs: dict[str, bytes]) -> list[Finding]:
    directory = plugin(tmp_path, code, manifest_extra, **kwargs)
    return analyze(directory, load_manifest(directory))


def rules(findings: list[Finding], prefix: str = "") -> set[tuple[str, int, str]]:
    """(rule, line, severity) of our own rules (bandit's ids start with B)."""
    return {(f.rule, f.line, f.severity) for f in findings if not f.rule.startswith("B") and f.rule.startswith(prefix)}


def test_network_use_without_network_key(tmp_path: Path) -> None:
    code = """\
        import socket
        from urllib.request import urlopen
        import requests as r
        r.get("https://example.com")
        """
    found = rules(findings_of(tmp_path, code), "network")
    assert found == {("network-undeclared", 1, "medium"), ("network-undeclared", 2, "medium"),
                     ("network-undeclared", 3, "medium")}  # fmt: skip
    reached_through_a_package = 'import urllib\nurllib.request.urlopen("https://example.com")\n'
    assert rules(findings_of(tmp_path / "c", reached_through_a_package)) == {("network-undeclared", 2, "medium")}
    allowed = "network: [{host: example.com, ports: [443]}]\n"
    assert not rules(findings_of(tmp_path / "b", code, allowed), "network")


def test_processes_dynamic_code_and_native_calls(tmp_path: Path) -> None:
    code = """\
        import subprocess as sp
        from os import system
        import ctypes
        import importlib
        sp.run(["ls"])
        system("ls")
        eval("1")
        exec(compile("x = 1", "f", "exec"))
        importlib.import_module(name)
        __import__("socket")
        """
    found = rules(findings_of(tmp_path, code))
    assert ("process-spawn", 5, "medium") in found
    assert ("process-spawn", 6, "medium") in found
    assert ("native-code", 3, "medium") in found
    assert {("dynamic-code", 7, "medium"), ("dynamic-code", 8, "medium"), ("dynamic-code", 9, "medium")} <= found
    assert ("network-undeclared", 10, "medium") in found  # a literal __import__ is followed


def test_process_spawn_is_not_evaded_by_trivial_indirection(tmp_path: Path) -> None:
    """os's functions are posix's; a literal importlib/__import__/getattr names the module or function as
    plainly as an import does; and a process function taken as a value is spawned later."""
    code = """\
        import posix
        import importlib
        import subprocess
        posix.system("id")
        importlib.import_module("subprocess").run(["id"])
        __import__("os").system("id")
        getattr(subprocess, "Popen")(["id"])
        spawn = subprocess.Popen
        """
    found = rules(findings_of(tmp_path, code), "process")
    assert found == {("process-spawn", line, "medium") for line in (4, 5, 6, 7, 8)}


def test_writes_outside_data_and_tmp(tmp_path: Path) -> None:
    code = """\
        import os, shutil
        from pathlib import Path
        MARKER = "/etc/marker"
        open("/etc/passwd", "a")
        open(MARKER, mode="w")
        Path("/usr/lib/x").write_text("x")
        shutil.rmtree("/opt")
        os.remove("/data/../etc/shadow")
        open("relative.txt", "w")
        open("/data/state.json", "w")
        open("/tmp/scratch", "wb")
        open("/etc/hostname")
        open("/dev/null", "w")
        shutil.copy("/data/a", "/data/b")
        """
    lines = {line for rule, line, _ in rules(findings_of(tmp_path, code), "write")}
    assert lines == {4, 5, 6, 7, 8, 9}


def test_host_service_without_its_permission(tmp_path: Path) -> None:
    code = """\
        class P:
            def run(self):
                self.get_service("state").get("k")
                self.get_service("state").set("k", 1)
                self.get_service("metrics")
                self.get_service("alerting")
                self.get_service("secrets").get("token")
                self.get_service("plugins")
                self.get_service("nosuch")
                self.publish("topic", {})
        """
    found = rules(findings_of(tmp_path, code, "permissions: [state.read]\n"))
    assert found == {
        ("service-undeclared", 4, "medium"),  # set needs state.write; get is covered by state.read
        ("service-undeclared", 5, "medium"),
        ("service-undeclared", 6, "medium"),  # alerting is the alerts service
        ("service-unknown", 9, "low"),
        ("service-undeclared", 10, "medium"),  # publish needs events.publish
    }
    wide = "permissions: [state.read, state.write, metrics.write, alerts.read, events.publish]\n"
    assert rules(findings_of(tmp_path / "b", code, wide), "service-undeclared") == set()
    wildcard = "permissions: [state.*]\n"  # asked wildcards stand for nothing (docs/permissions.md)
    assert ("service-undeclared", 3, "medium") in rules(findings_of(tmp_path / "w", code, wildcard))


def test_bandit_findings_carry_file_line_and_severity_and_nosec_is_not_honoured(tmp_path: Path) -> None:
    code = """\
        import subprocess


        def run(command):
            return subprocess.call(command, shell=True)  # nosec
        """
    found = [f for f in findings_of(tmp_path, code) if f.rule == "B602"]
    assert [(f.file, f.line, f.severity) for f in found] == [("pkg/plugin.py", 5, "high")]
    assert found[0].where == "pkg/plugin.py:5"


def test_examples_and_test_plugins_have_nothing_blocking_under_the_default_policy() -> None:
    directories = [*sorted((ROOT / "examples").glob("*/")), *sorted((ROOT / "tests/integration/plugins").glob("*/"))]
    checked = [d for d in directories if (d / "plugin.yaml").is_file()]
    assert len(checked) >= 10
    for directory in checked:
        assert CheckPolicy().blocking(analyze(directory, load_manifest(directory))) == [], directory
    hostile = ROOT / "tests/integration/plugins/hostile"
    assert {"process-spawn", "native-code", "network-undeclared", "write-outside-data"} <= {
        f.rule for f in analyze(hostile, load_manifest(hostile))
    }


def test_syntax_errors_and_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    files = {
        "pkg/broken.py": b"def f(:\n    pass\n",
        "pkg/latin.py": b"\xff\xfe import os\n",
        "pkg/declared.py": b"# -*- coding: latin-1 -*-\nname = '\xe9'\nimport socket\n",
        "pkg/nul.py": b"x = 1\x00\n",
    }
    found = {(f.file, f.rule, f.line) for f in findings_of(tmp_path, "x = 1\n", files=files)}
    assert ("pkg/broken.py", "syntax-error", 1) in found
    assert ("pkg/latin.py", "syntax-error", 1) in found
    assert ("pkg/nul.py", "syntax-error", 0) in found or ("pkg/nul.py", "syntax-error", 1) in found
    assert ("pkg/declared.py", "network-undeclared", 3) in found  # a declared encoding is read as declared


def test_file_names_and_literals_with_control_characters_are_shown_escaped(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = 'open("/etc/\\x1b]52;c;evil\\x07\\udcff", "w")\n'
    directory = plugin(tmp_path, code, files={"pkg/a\nb.py": b"import socket\n"})
    (directory / "pkg" / "bad\udcff.py").write_bytes(b"import socket\n")
    found = {(f.file, f.rule): f.message for f in analyze(directory, load_manifest(directory))}
    assert ("pkg/a\\x0ab.py", "network-undeclared") in found
    assert ("pkg/bad\\udcff.py", "network-undeclared") in found
    assert "/etc/\\x1b]52;c;evil\\x07\\udcff" in found[("pkg/plugin.py", "write-outside-data")]
    assert main(["plugin", "check", str(directory), "--output", "json"]) == ExitCode.OK
    assert main(["plugin", "check", str(directory)]) == ExitCode.OK
    assert "\x1b" not in capsys.readouterr().out


def test_huge_deep_and_special_files_are_unanalysed_high(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 10_000)
    files = {
        "pkg/huge.py": b"import subprocess\n" + b"x = 1\n" * 5_000,
        "pkg/deep.py": b"x = " + b"1 + " * 100_000 + b"1\n",
    }
    directory = plugin(tmp_path, "x = 1\n", files=files)
    os.mkfifo(directory / "pkg" / "pipe.py")
    found = {(f.file, f.rule, f.severity) for f in analyze(directory, load_manifest(directory))}
    assert {("pkg/huge.py", "unanalysed", "high"), ("pkg/deep.py", "unanalysed", "high"),
            ("pkg/pipe.py", "unanalysed", "high")} <= found  # fmt: skip
    assert not any(f[0] == "pkg/huge.py" and f[1] != "unanalysed" for f in found)


def test_too_many_files_or_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "MAX_FILES", 3)
    files = {f"pkg/m{index}.py": b"x = 1\n" for index in range(5)}
    found = [f for f in findings_of(tmp_path, "x = 1\n", files=files) if f.rule == "unanalysed"]
    assert len(found) == 3 and all("more than 3" in f.message for f in found)
    monkeypatch.setattr(sources, "MAX_FILES", 100)
    monkeypatch.setattr(sources, "MAX_TOTAL_BYTES", 20)
    found = [f for f in findings_of(tmp_path / "b", "x = 1\n", files=files) if f.rule == "unanalysed"]
    assert len(found) == 3 and all("20 bytes in all" in f.message for f in found)


def test_links_out_of_the_plugin_are_reported_and_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.py").write_text("import subprocess\nsubprocess.call('x', shell=True)\n")
    directory = plugin(tmp_path, "x = 1\n")
    (directory / "pkg" / "evil.py").symlink_to(outside / "evil.py")
    (directory / "pkg" / "outdir").symlink_to(outside)
    (directory / "pkg" / "inside.py").symlink_to(directory / "pkg" / "plugin.py")
    found = analyze(directory, load_manifest(directory))
    assert {(f.file, f.rule) for f in found} == {("pkg/evil.py", "symlink-outside"), ("pkg/outdir", "symlink-outside")}
    assert all(f.severity == "medium" for f in found)  # the build refuses such links itself (exit 4)


def test_only_what_the_build_ships_is_judged(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYSOPS_POLICY", raising=False)
    shell = b"import subprocess\nsubprocess.call(cmd, shell=True)\n"
    files = {".venv/lib/site.py": shell, "tests/test_x.py": shell, ".dockerignore": b"tests\n", "pkg/run.py": b""}
    directory = plugin(tmp_path, "x = 1\n", files=files)
    everything = {f.file for f in analyze(directory, load_manifest(directory)) if f.rule == "B602"}
    assert everything == {".venv/lib/site.py", "tests/test_x.py"}
    findings, policy = shipped_code_findings(home, directory, load_manifest(directory))
    assert not [f for f in findings if f.rule == "B602"] and policy == CheckPolicy()
    assert main(["plugin", "check", str(directory)]) == ExitCode.OK
    (directory / "pkg" / "run.py").write_bytes(shell)  # shipped: judged
    assert main(["plugin", "check", str(directory)]) == ExitCode.POLICY_DENIED


def test_policy_blocks_by_severity_and_ignores_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    findings = [Finding("a.py", 1, "B602", "high", "m"), Finding("a.py", 2, "process-spawn", "medium", "m")]
    assert CheckPolicy().blocking(findings) == findings[:1]
    assert CheckPolicy(block=["medium", "high"], ignore=["B602"]).blocking(findings) == findings[1:]
    assert CheckPolicy(block=[]).blocking(findings) == []
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("checks: {block: [medium], ignore: [B404]}\n")
    monkeypatch.setenv("SYSOPS_POLICY", str(policy_file))
    assert load_policy(tmp_path).checks == CheckPolicy(block=["medium"], ignore=["B404"])
    policy_file.write_text("checks: {block: [severe]}\n")
    with pytest.raises(PolicyDeniedError, match=r"policy.yaml: key 'checks.block.0'"):
        load_policy(tmp_path)


def test_check_before_build_refuses_and_keeps_the_report(tmp_path: Path) -> None:
    directory = plugin(tmp_path, "import subprocess\nsubprocess.call(cmd, shell=True)\n")
    manifest = load_manifest(directory)
    home = tmp_path / "home"
    with pytest.raises(PolicyDeniedError) as refused:
        check_before_build(home, directory, manifest, CheckPolicy(), lambda _: None)
    assert refused.value.exit_code == ExitCode.POLICY_DENIED
    assert "pkg/plugin.py:2 B602 (high)" in str(refused.value)
    assert "sysops plugin check" in str(refused.value)
    report = load_report(home, "plug", "1.0.0")
    assert report is not None and {f.rule for f in report} >= {"B602", "process-spawn"}
    path = report_path(home, "plug", "1.0.0")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert check_before_build(home, directory, manifest, CheckPolicy(ignore=["B602"]), lambda _: None)


def test_the_host_refuses_before_it_builds(
    tmp_path: Path, orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Orchestrator.up (the host's own build, as `--watch` through a host uses) checks first, as the CLI does."""
    monkeypatch.delenv("SYSOPS_POLICY", raising=False)
    directory = plugin(tmp_path, "import subprocess\nsubprocess.call(cmd, shell=True)\n")

    def no_build(*args: object) -> None:
        raise AssertionError("an image was built for a plugin the checks block")

    monkeypatch.setattr(orchestrator.driver, "build_image", no_build)
    with pytest.raises(PolicyDeniedError, match=r"pkg/plugin.py:2 B602 \(high\)"):
        orchestrator.up(directory)
    assert load_report(orchestrator.settings.home, "plug", "1.0.0") is not None


def test_load_report_is_none_when_missing_or_corrupt(tmp_path: Path) -> None:
    assert load_report(tmp_path, "plug", "1.0.0") is None
    path = report_path(tmp_path, "plug", "1.0.0")
    path.parent.mkdir(parents=True)
    for text in (
        "{",
        json.dumps({"findings": [{"file": "a", "line": 1, "rule": "r", "severity": "x", "message": ""}]}),
    ):
        path.write_text(text)
        assert load_report(tmp_path, "plug", "1.0.0") is None


def test_plugin_check_command(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SYSOPS_POLICY", raising=False)
    directory = plugin(tmp_path, "import subprocess\nsubprocess.call(cmd, shell=True)\n")
    assert main(["plugin", "check", str(directory)]) == ExitCode.POLICY_DENIED
    out, err = capsys.readouterr()
    assert "pkg/plugin.py:2  high  B602" in out and "[blocks]" in out
    assert "1 blocking" in err
    assert main(["plugin", "check", str(directory), "--output", "json"]) == ExitCode.POLICY_DENIED
    report = json.loads(capsys.readouterr().out)
    assert report["blocking"] == 1 and {row["rule"] for row in report["findings"] if row["blocks"]} == {"B602"}
    (home / "policy.yaml").parent.mkdir(parents=True, exist_ok=True)
    (home / "policy.yaml").write_text("checks: {block: []}\n")
    assert main(["plugin", "check", str(directory)]) == ExitCode.OK
    assert not report_path(home, "plug", "1.0.0").exists()  # only a build's report is kept
    assert main(["plugin", "check", str(tmp_path / "nothing")]) == ExitCode.USAGE
    (directory / "plugin.yaml").write_text("name: [\n")
    assert main(["plugin", "check", str(directory)]) == ExitCode.INVALID_PLUGIN
    assert "Traceback" not in capsys.readouterr().err


def test_finding_round_trips_through_json() -> None:
    finding = Finding("a.py", 3, "B602", "high", "m")
    assert Finding.from_json(json.loads(json.dumps(finding.to_json()))) == finding
