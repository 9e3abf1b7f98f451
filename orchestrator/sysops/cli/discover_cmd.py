"""`sysops plugin discover`: the plugins this installation finds by itself, and what it skipped and why.

Names, paths and error lines come from plugin directories and installed packages (untrusted): in a table
every cell has its control characters escaped (newlines too, so a row stays one line) whether the output
is a terminal or a pipe; JSON escapes them as JSON does.
"""

from __future__ import annotations

import sys
from typing import Any

from sysops.cli.output import emit
from sysops.cli.plugin_cmd import Output, OutputOption
from sysops.safe_text import escape_controls

FOUND_COLUMNS = ("name", "version", "source", "path")
SKIPPED_COLUMNS = ("where", "why")


def _escaped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: escape_controls(str(value), one_line=True) for key, value in row.items()} for row in rows]


def discover(output: OutputOption = Output.TEXT) -> None:
    """List plugins found in plugin_dirs (config.yaml), SYSOPS_PLUGIN_PATH and installed packages' entry points."""
    from sysops.discovery import discover as run_discovery

    discovery = run_discovery()
    found = [plugin.as_row() for plugin in discovery.found]
    skipped = [entry.as_row() for entry in discovery.skipped]
    if output.is_data:
        emit({"found": found, "skipped": skipped}, output)
        return
    if found:
        emit(_escaped(found), output, FOUND_COLUMNS)
    else:
        sys.stdout.write("no plugins found\n")
    if skipped:
        sys.stdout.write("\nskipped:\n")
        emit(_escaped(skipped), output, SKIPPED_COLUMNS)
