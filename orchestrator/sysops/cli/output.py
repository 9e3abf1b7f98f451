"""Plain-text tables and JSON for everything the CLI prints, without importing anything heavy.

A command's result goes to stdout through `write_result`: on a terminal, control characters a plugin put
in it are escaped (they could set the clipboard, retitle or rewrite the screen) unless the user asked for
raw output with SYSOPS_RAW_OUTPUT=1; to a pipe or a file it is written as it is, byte for byte.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sysops.safe_text import escape_controls

#: Set to 1 to let a command's result reach the terminal unescaped.
RAW_OUTPUT_VARIABLE = "SYSOPS_RAW_OUTPUT"


def _cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return "" if value is None else str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Format rows of dicts as an aligned table with upper-case headers."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(column), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)]
    lines = ["  ".join(column.upper().ljust(width) for column, width in zip(columns, widths, strict=True))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(line.rstrip() for line in lines)


def format_data(data: Any) -> str:
    """Format a command's dict or list result as a table (or lines for a list of scalars)."""
    if isinstance(data, dict):
        if data and all(isinstance(value, dict) for value in data.values()):
            return format_table([{"name": key, **value} for key, value in data.items()])
        return format_table([{"key": key, "value": value} for key, value in data.items()])
    if isinstance(data, list):
        if data and all(isinstance(item, dict) for item in data):
            return format_table(data)
        return "\n".join(_cell(item) for item in data)
    return _cell(data)


def when(timestamp: float) -> str:
    """A Unix time as the CLI shows it: UTC, to the second (`2026-01-31 17:05:09`)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def write_result(text: str) -> None:
    """Write a command's result to stdout: escaped on a terminal unless SYSOPS_RAW_OUTPUT=1, else as it is."""
    if sys.stdout.isatty() and os.environ.get(RAW_OUTPUT_VARIABLE) != "1":
        text = escape_controls(text)
    sys.stdout.write(text)


def emit(data: Any, output: str, columns: Sequence[str] | None = None) -> None:
    """Print data as JSON (whose strings escape every control character) or as a table."""
    if output == "json":
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    elif isinstance(data, list) and columns is not None:
        write_result(format_table(data, columns) + "\n")
    else:
        write_result(format_data(data) + "\n")
