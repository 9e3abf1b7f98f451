"""cli/output.py: tables (plain or rich), wide, JSON and YAML, and cells escaped on a terminal."""

import io
import json
import sys
from pathlib import PurePosixPath

import pytest
import yaml
from sysops.cli.output import OUTPUT_FORMATS, emit, format_data, format_table


def test_table_aligns_columns() -> None:
    text = format_table([{"name": "hello", "state": "Active"}, {"name": "x", "state": "Failed"}])
    assert text.splitlines() == ["NAME   STATE", "hello  Active", "x      Failed"]


def test_dict_becomes_key_value_table() -> None:
    assert format_data({"a": 1, "b": [1, 2]}).splitlines() == ["KEY  VALUE", "a    1", "b    [1, 2]"]


def test_list_of_scalars_is_lines() -> None:
    assert format_data(["x", 2]) == "x\n2"


ROWS = [{"name": "hello", "state": "Active", "image": "img:1"}, {"name": "x", "state": "Failed", "image": "\x1b]0;t"}]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _emitted(monkeypatch: pytest.MonkeyPatch, stream: io.StringIO, *args: object, **kwargs: object) -> str:
    monkeypatch.setattr(sys, "stdout", stream)
    emit(*args, **kwargs)  # type: ignore[arg-type]
    return stream.getvalue()


def test_the_formats_are_fixed() -> None:
    assert OUTPUT_FORMATS == ("text", "json", "yaml", "wide")


def test_text_to_a_pipe_is_plain_aligned_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = _emitted(monkeypatch, io.StringIO(), ROWS, "text", ["name", "state"])
    assert shown.splitlines() == ["NAME   STATE", "hello  Active", "x      Failed"]


def test_wide_adds_the_wide_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = _emitted(monkeypatch, io.StringIO(), ROWS, "wide", ["name", "state"], ["name", "state", "image"])
    assert shown.splitlines()[0].split() == ["NAME", "STATE", "IMAGE"]
    assert "img:1" in shown


def test_json_and_yaml_hold_the_whole_data(monkeypatch: pytest.MonkeyPatch) -> None:
    assert json.loads(_emitted(monkeypatch, io.StringIO(), ROWS, "json", ["name"])) == ROWS
    assert yaml.safe_load(_emitted(monkeypatch, io.StringIO(), ROWS, "yaml", ["name"])) == ROWS


def test_yaml_writes_what_json_cannot_hold_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = _emitted(monkeypatch, io.StringIO(), {"path": PurePosixPath("/a")}, "yaml")
    assert yaml.safe_load(shown) == {"path": "/a"}


def test_text_on_a_terminal_is_a_rich_table_with_escaped_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    shown = _emitted(monkeypatch, Terminal(), ROWS, "wide", ["name"], ["name", "state", "image"])
    assert "\x1b]" not in shown and "\\x1b]0;t" in shown
    assert "\x1b[1m" in shown  # rich drew the bold header: not the plain table


def test_no_color_on_a_terminal_is_the_plain_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    shown = _emitted(monkeypatch, Terminal(), ROWS, "text", ["name", "state"])
    assert shown.splitlines() == ["NAME   STATE", "hello  Active", "x      Failed"]


def test_markup_in_a_cell_is_shown_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    shown = _emitted(monkeypatch, Terminal(), [{"name": "[bold red]x[/]"}], "text", ["name"])
    assert "[bold red]x[/]" in shown


def test_a_rich_table_wider_than_the_terminal_keeps_cells_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLUMNS", "40")
    digest = "sha256:" + "ab" * 32
    shown = _emitted(monkeypatch, Terminal(), [{"name": "x", "digest": digest, "note": "y" * 30}], "text")
    assert digest in shown and "y" * 30 in shown
