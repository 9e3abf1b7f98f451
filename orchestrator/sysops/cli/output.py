"""Plain-text tables and JSON for everything the CLI prints, without importing anything heavy."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


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


def emit(data: Any, output: str, columns: Sequence[str] | None = None) -> None:
    """Print data as JSON or as a table."""
    if output == "json":
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    elif isinstance(data, list) and columns is not None:
        sys.stdout.write(format_table(data, columns) + "\n")
    else:
        sys.stdout.write(format_data(data) + "\n")
