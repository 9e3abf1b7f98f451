"""`sysops plugin check DIR`: the static checks of `plugin up` (core/code_checks.py), run alone, nothing built.

Prints every finding as `file:line  severity  rule  message` (or JSON with `--output json`), marking those
the policy in effect blocks (its `checks:` section: sysops/checks/policy.py). Exit 0 when nothing blocks,
9 (ExitCode.POLICY_DENIED, as `plugin up` refuses) when a finding does, 4 for a missing or invalid
plugin.yaml. The report `plugin up` keeps for the rating is not written: only a build's code is rated.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from sysops.cli.output import emit, write_result
from sysops.cli.plugin_cmd import Output, OutputOption
from sysops.errors import ExitCode, UsageError
from sysops.safe_text import escape_controls


def check(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Plugin directory (with plugin.yaml)")],
    output: OutputOption = Output.TEXT,
) -> None:
    """Run the static checks (bandit and the manifest rules) over a plugin's code; exit 9 if the policy blocks."""
    from sysops.core.code_checks import shipped_code_findings
    from sysops.core.manifest import load_manifest
    from sysops.settings import Settings

    if not directory.is_dir():
        raise UsageError(f"{directory}: not a plugin directory", hint="give the directory that holds plugin.yaml")
    manifest = load_manifest(directory.resolve())
    findings, policy = shipped_code_findings(Settings().home, directory.resolve(), manifest)
    blocking = set(policy.blocking(findings))
    if output.is_data:
        rows = [{**finding.to_json(), "blocks": finding in blocking} for finding in findings]
        report = {"plugin": manifest.name, "version": manifest.version, "directory": str(directory)}
        emit(
            {**report, "block": policy.block, "ignore": policy.ignore, "findings": rows, "blocking": len(blocking)},
            output,
        )
    else:
        lines = [
            f"{finding.where}  {finding.severity}  {finding.rule}  {finding.message}"
            f"{'  [blocks]' if finding in blocking else ''}"
            for finding in findings
        ]
        write_result("".join(f"{line}\n" for line in lines))
    summary = f"{manifest.name} {manifest.version}: {len(findings)} finding(s), {len(blocking)} blocking"
    sys.stderr.write(f"{escape_controls(summary)} (checks.block: {', '.join(policy.block) or 'nothing'})\n")
    if blocking:
        raise typer.Exit(int(ExitCode.POLICY_DENIED))
