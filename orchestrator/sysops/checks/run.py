"""Run every static check over a plugin directory, keep the report, and refuse a build the policy blocks.

`analyze` is bandit (checks/bandit_scan.py) plus our manifest rules (checks/rules.py) over the files
checks/sources.py could read; the report of the last analysis of each plugin version is kept in
`$SYSOPS_HOME/cache/checks/<plugin>@<version>.json` (0600 in a 0700 directory) for the security rating
(`load_report`). `check_before_build` is what `plugin up` runs, locally and against a server, before any
image is built.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from sysops.checks.bandit_scan import bandit_findings
from sysops.checks.findings import Finding
from sysops.checks.policy import CheckPolicy
from sysops.checks.rules import manifest_findings
from sysops.checks.sources import Ignores, collect_sources
from sysops.core.manifest import Manifest
from sysops.errors import PolicyDeniedError
from sysops.private_paths import ensure_private_dir, write_private_file

REPORT_DIR = Path("cache") / "checks"
#: Blocking findings named in a refusal's one line; `sysops plugin check DIR` lists them all.
SHOWN_IN_REFUSAL = 3


def analyze(plugin_dir: Path, manifest: Manifest, ignores: Ignores | None = None) -> list[Finding]:
    """Every finding in the plugin's Python code, sorted by file, line and rule; `ignores` (the build's ignore
    rules) leaves out what never reaches the image, by default nothing."""
    sources = collect_sources(plugin_dir, ignores) if ignores else collect_sources(plugin_dir)
    findings = [*sources.findings, *bandit_findings(sources.files)]
    for source in sources.files:
        findings += manifest_findings(source, manifest)
    return sorted(set(findings))


def report_path(home: Path, plugin: str, version: str) -> Path:
    """Where the report of `plugin` `version` is kept (names and versions are checked by the manifest).

    '@' is in no plugin name and no PEP 440 version; '-' is in both ('x' 1-2 and 'x-1' 2 would share a file).
    """
    return home / REPORT_DIR / f"{plugin}@{version}.json"


def save_report(home: Path, manifest: Manifest, findings: list[Finding]) -> Path:
    """Keep the findings of `manifest`'s plugin version, replacing an older report; return the file."""
    ensure_private_dir(home)
    ensure_private_dir(home / REPORT_DIR.parent)
    ensure_private_dir(home / REPORT_DIR)
    path = report_path(home, manifest.name, manifest.version)
    report = {"plugin": manifest.name, "version": manifest.version, "findings": [f.to_json() for f in findings]}
    write_private_file(path, json.dumps(report, indent=1) + "\n")
    return path


def load_report(home: Path, plugin: str, version: str) -> list[Finding] | None:
    """The findings kept for `plugin` `version`, or None when it was never checked or the report is unreadable."""
    try:
        data = json.loads(report_path(home, plugin, version).read_text(encoding="utf-8"))
        return [Finding.from_json(item) for item in data["findings"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_before_build(
    home: Path,
    plugin_dir: Path,
    manifest: Manifest,
    policy: CheckPolicy,
    progress: Callable[[str], None],
    ignores: Ignores | None = None,
) -> list[Finding]:
    """Analyse, keep the report, and raise PolicyDeniedError (exit 9) when a finding blocks; else the findings."""
    progress(f"checking the code of {manifest.name} {manifest.version}")
    findings = analyze(plugin_dir, manifest, ignores)
    save_report(home, manifest, findings)
    blocking = policy.blocking(findings)
    if blocking:
        shown = "; ".join(f"{f.where} {f.rule} ({f.severity}): {f.message}" for f in blocking[:SHOWN_IN_REFUSAL])
        more = f"; and {len(blocking) - SHOWN_IN_REFUSAL} more" if len(blocking) > SHOWN_IN_REFUSAL else ""
        raise PolicyDeniedError(
            f"{plugin_dir}: static checks found {len(blocking)} finding(s) the policy blocks "
            f"(checks.block: {', '.join(policy.block)}): {shown}{more}",
            hint=f"see them all with 'sysops plugin check {plugin_dir}'; fix the code, or an operator lists the "
            "rule under checks.ignore in the policy file",
        )
    return findings
