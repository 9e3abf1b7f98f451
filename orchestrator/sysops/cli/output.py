"""Tables, JSON and YAML for everything the CLI prints, without importing anything heavy up front.

Every listing prints through `emit` in one of `OUTPUT_FORMATS`: `text` is a table (drawn with rich when
stdout is a terminal and NO_COLOR is unset, plain aligned text otherwise, so pipes and scripts get stable
columns), `wide` the same table with more columns, `json` and `yaml` the whole data. rich and PyYAML are
imported inside the functions that need them: `sysops greet World` (the routed fast path) pays for neither.

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
from typing import Any, TextIO

from sysops.safe_text import escape_controls

#: Set to 1 to let a command's result reach the terminal unescaped.
RAW_OUTPUT_VARIABLE = "SYSOPS_RAW_OUTPUT"
#: The formats of `--output` on every listing.
OUTPUT_FORMATS = ("text", "json", "yaml", "wide")
#: Width a rich table is measured in, to find how wide it is when nothing is cut.
UNBOUNDED_WIDTH = 1_000_000
#: The formats that print the whole data rather than a table.
DATA_FORMATS = ("json", "yaml")


def fancy_terminal(stream: TextIO) -> bool:
    """Whether to draw with rich on `stream`: a terminal, NO_COLOR unset or empty (no-color.org), TERM not dumb."""
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return "" if value is None else str(value)


def _columns_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Format rows of dicts as an aligned table with upper-case headers."""
    if columns is None:
        columns = _columns_of(rows)
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(column), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)]
    lines = ["  ".join(column.upper().ljust(width) for column, width in zip(columns, widths, strict=True))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(line.rstrip() for line in lines)


def table_rows(data: Any) -> list[dict[str, Any]] | None:
    """The rows a table shows for `data` (a list of dicts, a dict of dicts, or a dict of values); None if none."""
    if isinstance(data, dict):
        if data and all(isinstance(value, dict) for value in data.values()):
            return [{"name": key, **value} for key, value in data.items()]
        return [{"key": key, "value": value} for key, value in data.items()]
    if isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
        return data
    return None


def format_data(data: Any) -> str:
    """Format a command's dict or list result as a table (or lines for a list of scalars)."""
    rows = table_rows(data)
    if rows is not None:
        return format_table(rows)
    if isinstance(data, list):
        return "\n".join(_cell(item) for item in data)
    return _cell(data)


def format_yaml(data: Any) -> str:
    """YAML of `data` (safe_dump, key order kept); values JSON cannot hold are written as their text, as in JSON."""
    import yaml

    plain = json.loads(json.dumps(data, default=str))
    return str(yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, default_flow_style=False))


def when(timestamp: float) -> str:
    """A Unix time as the CLI shows it: UTC, to the second (`2026-01-31 17:05:09`)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def write_result(text: str) -> None:
    """Write a command's result to stdout: escaped on a terminal unless SYSOPS_RAW_OUTPUT=1, else as it is."""
    if sys.stdout.isatty() and os.environ.get(RAW_OUTPUT_VARIABLE) != "1":
        text = escape_controls(text)
    sys.stdout.write(text)


def print_rich_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Draw rows as a rich table on stdout (a terminal): every cell is plain text, its control characters escaped.

    A cell is never folded or cut: a table wider than the terminal overflows it, like kubectl's, so what a
    cell says (an id, a digest, an escaped message) stays whole and can be selected and copied.
    """
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    raw = os.environ.get(RAW_OUTPUT_VARIABLE) == "1"
    table = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
    for column in columns:
        table.add_column(column.upper(), no_wrap=True)
    for row in rows:
        cells = (_cell(row.get(column)) for column in columns)
        table.add_row(*(Text(cell if raw else escape_controls(cell)) for cell in cells))  # Text: no markup
    console = Console(file=sys.stdout, highlight=False)
    natural = Measurement.get(console, console.options.update_width(UNBOUNDED_WIDTH), table).maximum
    console.width = max(console.width, natural)  # rows too wide overflow the terminal, as plain ones do
    console.print(table)


def emit(
    data: Any,
    output: str,
    columns: Sequence[str] | None = None,
    wide_columns: Sequence[str] | None = None,
) -> None:
    """Print data in one of OUTPUT_FORMATS: JSON (whose strings escape every control character), YAML, or a table.

    A table shows `columns` (all keys if None); `wide` shows `wide_columns` (else the same). On a terminal
    without NO_COLOR the table is drawn by rich; otherwise it is plain aligned text.
    """
    if output == "json":
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        return
    if output == "yaml":
        write_result(format_yaml(data))
        return
    shown = wide_columns if output == "wide" and wide_columns is not None else columns
    rows = data if isinstance(data, list) and shown is not None else table_rows(data)
    if rows is not None and fancy_terminal(sys.stdout):
        print_rich_table(rows, shown if shown is not None else _columns_of(rows))
    elif rows is not None and shown is not None:
        write_result(format_table(rows, shown) + "\n")
    else:
        write_result(format_data(data) + "\n")
