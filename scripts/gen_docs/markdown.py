"""Markdown building blocks the generators share: escaped table cells, tables and a generated-page banner."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

_MARKUP = str.maketrans({"\\": "\\\\", "*": "\\*", "[": "\\[", "]": "\\]", "<": "&lt;", ">": "&gt;"})


def prose(text: object) -> str:
    """Text from code comments or help, shown as written: outside code spans, Markdown's markup is escaped
    (`<name>` would vanish as an HTML tag, `host[:port][/path]` read as a link), whitespace folded."""
    pieces = " ".join(str(text).split()).split("`")
    return "`".join(piece if i % 2 else piece.translate(_MARKUP) for i, piece in enumerate(pieces))


def cell(text: object) -> str:
    """One table cell: prose with pipes escaped; empty shown as a dash."""
    value = prose(text) if text is not None else ""
    return value.replace("|", "\\|") if value else "-"


def paragraph(text: object) -> str:
    """A paragraph of prose, or nothing when the text is empty."""
    value = prose(text)
    return f"{value}\n" if value else ""


def code(text: object) -> str:
    """Inline code for a table cell (backticks inside are not expected in names and flags)."""
    value = str(text)
    return f"`{value}`" if value else "-"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured table; cells must already be escaped (`cell`, `code`)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def generated_from(source: str) -> str:
    """The note every generated page opens with: where it comes from, so nobody edits the output."""
    return f"!!! note\n    Generated from {source} by `scripts/build-docs.sh`; edit the source, not this page.\n"
