"""`sysops plugin doctor`: which plugins fit the versions there are now, and which an upgrade would break.

The rows are the installed plugins (the host's catalog: one per store key, running or taken down) and the
discovered ones not installed (sysops.discovery); the columns are this sysops, and the Python and SDK of the
local base image (its labels, Settings().base_image). Each cell is "ok", "needs RANGE (is VERSION)" or "unknown"
(no labelled base image); "breaks on upgrade" names the next sysops minor and major, Python minor and SDK
minor that a plugin fitting now would not (core/compatibility.py). Exit 0 when every installed plugin fits,
4 (ExitCode.INVALID_PLUGIN) when one does not; a discovered plugin that does not fit is shown, not counted.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from sysops import __version__
from sysops.cli.output import emit, format_table, write_result
from sysops.cli.plugin_cmd import Output, OutputOption, control_client
from sysops.core.compatibility import SHOWN, Platform, doctor_row, next_versions, protocol_fits, row_fits
from sysops.errors import ExitCode, SysopsError
from sysops.safe_text import escape_controls

COLUMNS = ["name", "version", "where", "sysops", "python", "sdk", "breaks_on_upgrade"]


def base_platform(base_image: str) -> tuple[Platform, str]:
    """This sysops and the local base image's Python, SDK and protocol; and a note when the image says nothing."""
    from sysops.runtime.factory import docker_driver

    try:
        labels = docker_driver().image_labels(base_image)
    except SysopsError as error:
        return Platform(__version__), f"base image {base_image} not readable ({error.message})"
    if labels is None:
        return Platform(__version__), f"base image {base_image} not found (plugin-base-image/build.sh builds it)"
    platform = Platform.from_labels(labels)
    if not (platform.python and platform.sdk):
        return platform, f"base image {base_image} has no version labels (rebuild it: plugin-base-image/build.sh)"
    return platform, ""


def installed_rows(platform: Platform) -> list[dict[str, Any]]:
    """A row per key of the host's catalog."""
    return [
        doctor_row(
            entry["key"],
            entry["version"],
            "running" if entry["running"] else "installed (down)",
            entry["compatibility"],
            platform,
        )
        for entry in control_client().catalog()
    ]


def discovered_rows(platform: Platform, installed: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """A row per discovered plugin version not already installed."""
    from sysops.discovery import discover

    rows = []
    for plugin in discover().found:
        if (plugin.name, plugin.version) in installed:
            continue
        ranges = {key: str(getattr(plugin.manifest.compatibility, key)) for key in SHOWN}
        rows.append(doctor_row(plugin.name, plugin.version, f"discovered ({plugin.path})", ranges, platform))
    return rows


def doctor(output: OutputOption = Output.TEXT) -> None:
    """Check installed and discovered plugins against this sysops and the base image's Python and SDK."""
    from sysops.settings import Settings

    base_image = Settings().base_image
    platform, note = base_platform(base_image)
    installed = installed_rows(platform)
    rows = installed + discovered_rows(platform, {(row["name"], row["version"]) for row in installed})
    misfits = [row for row in installed if not (row_fits(row) and protocol_fits(platform.protocol))]
    report = {
        "sysops": platform.sysops,
        "base_image": base_image,
        "python": platform.python,
        "sdk": platform.sdk,
        "protocol": platform.protocol,
        "protocol_fits": protocol_fits(platform.protocol),
        "upgrades": [f"{SHOWN[key]} {version}" for key, version in next_versions(platform)],
        "note": note,
        "plugins": rows,
    }
    if output.is_data:
        emit(report, output)
    else:
        write_result(_text(report) + "\n")
    if note:
        sys.stderr.write(f"warning: {escape_controls(note)}\n")
    if misfits:
        sys.stderr.write(f"{len(misfits)} installed plugin(s) do not fit the versions running now\n")
        raise typer.Exit(int(ExitCode.INVALID_PLUGIN))


def _text(report: dict[str, Any]) -> str:
    protocol = report["protocol"] or "unknown"
    if report["protocol"] and not report["protocol_fits"]:
        protocol += " (another major than this sysops speaks: plugins will not start)"
    header = [
        f"sysops {report['sysops']}; base image {report['base_image']}: Python {report['python'] or 'unknown'}, "
        f"SDK {report['sdk'] or 'unknown'}, protocol {protocol}",
        f"upgrades checked: {', '.join(report['upgrades']) or 'none'}",
    ]
    rows = [{**row, "breaks_on_upgrade": ", ".join(row["breaks_on_upgrade"]) or "-"} for row in report["plugins"]]
    table = format_table(rows, COLUMNS) if rows else "no plugins installed or discovered"
    return "\n".join([*header, "", table])
