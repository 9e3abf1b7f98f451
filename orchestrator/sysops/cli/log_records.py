"""`sysops plugin logs NAME --structured`: a plugin's structured log records, one per line.

The records come from the `logs` host service (services/logs.py), stamped by the host with the plugin,
instance and revision that wrote them, so a reader can trust who wrote what; their message and fields are
the plugin's own text, so a line is escaped whole before it reaches the terminal. `-o json` prints each
record as one JSON object per line (JSON escapes every control character), for jq and log shippers.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

from sysops.cli.output import when
from sysops.safe_text import escape_controls


def record_line(record: dict[str, Any]) -> str:
    """`TIME LEVEL revision N instance ID: message key=value ...` (escaped: one line, no control characters)."""
    fields = " ".join(f"{key}={json.dumps(value, default=str)}" for key, value in (record.get("fields") or {}).items())
    text = (
        f"{when(float(record.get('time', 0)))} {str(record.get('level', '')).upper():<7} "
        f"revision {record.get('revision')} instance {record.get('instance')}: {record.get('message', '')}"
    )
    return escape_controls(f"{text} {fields}" if fields else text, one_line=True)


def print_records(lines: Iterable[str], output: str, *, follow: bool = False) -> None:
    """Print the records the server streams (each a JSON object) as text lines or JSON lines."""
    for line in lines:
        if output == "json":
            sys.stdout.write(json.dumps(json.loads(line)) + "\n")
        else:
            sys.stdout.write(record_line(json.loads(line)) + "\n")
        if follow:
            sys.stdout.flush()
    sys.stdout.flush()
