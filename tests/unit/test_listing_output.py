"""`--output text|json|yaml|wide` on every listing, and progress through cli/progress.py (issue 14 item 3)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import click
import pytest
import typer
import yaml
from sysops.cli.app import app
from sysops.cli.events_cmd import event_text
from sysops.cli.main import main
from sysops.cli.output import OUTPUT_FORMATS
from sysops.cli.plugin_cmd import Output
from sysops.cli.progress import progress_reporter
from sysops.core.orchestrator import Orchestrator
from sysops.services.dispatch import Caller
from sysops.store import EventRecord

from tests.unit.test_operator_surface import Served, served  # noqa: F401  (the fixture)
from tests.unit.test_rollout import _target

#: The listings of the CLI: each takes --output with every format.
LISTINGS = (
    "plugin ls", "plugin status", "plugin history", "plugin search", "plugin discover", "plugin doctor",
    "plugin permissions", "plugin config", "plugin verify", "plugin check", "plugin logs", "events", "index ls",
    "key ls", "alerts", "context ls", "host status", "config show", "config validate",
)  # fmt: skip


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _commands(group: click.Group, path: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        found[f"{path}{name}"] = command
        if isinstance(command, click.Group):
            found.update(_commands(command, f"{path}{name} "))
    return found


def test_every_listing_offers_every_format() -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    commands = _commands(group)
    for path in LISTINGS:
        options = [param for param in commands[path].params if param.name == "output"]
        assert options, f"{path} has no --output"
    for path, command in commands.items():
        for param in command.params:
            if param.name == "output":
                assert isinstance(param.type, click.Choice), path
                assert tuple(param.type.choices) == OUTPUT_FORMATS, path


@pytest.fixture
def listed(control_host: Orchestrator) -> Orchestrator:
    control_host.rollout.roll(_target("echo-v1"))
    return control_host


def test_plugin_ls_in_each_format(listed: Orchestrator, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugin", "ls", "-o", "yaml"]) == 0
    rows = yaml.safe_load(capsys.readouterr().out)
    assert [(row["name"], row["commands"]) for row in rows] == [("echo", ["calls", "echo"])]
    assert main(["plugin", "ls", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == rows
    assert main(["plugin", "ls"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["NAME", "STATE", "VERSION", "REVISION", "REPLICAS", "HEALTH", "RATING", "CONTAINER", "COMMANDS"]
    assert main(["plugin", "ls", "-o", "wide"]) == 0
    wide = capsys.readouterr().out.splitlines()
    assert wide[0].split()[-4:] == ["RUNTIME", "SOURCE", "IMAGE", "LAST_ERROR"]
    assert "echo-v1" in wide[1]


def test_plugin_status_and_history_as_yaml(listed: Orchestrator, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugin", "status", "echo", "-o", "yaml"]) == 0
    status = yaml.safe_load(capsys.readouterr().out)
    assert status["name"] == "echo" and status["version"] == "1.0.0"
    assert main(["plugin", "history", "echo", "-o", "yaml"]) == 0
    assert [row["revision"] for row in yaml.safe_load(capsys.readouterr().out)] == [1]


def test_key_ls_as_yaml_and_wide(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["key", "generate", "mine"]) == 0
    capsys.readouterr()
    assert main(["key", "ls", "-o", "yaml"]) == 0
    [key] = yaml.safe_load(capsys.readouterr().out)
    assert key["name"] == "mine" and key["own"] is True
    assert main(["key", "ls", "-o", "wide"]) == 0
    assert capsys.readouterr().out.split()[:2] == ["NAME", "KEY_ID"]


def test_events_as_yaml_form_one_list() -> None:
    events = [EventRecord(id=i, plugin="echo", time=0.0, kind="Started", message=f"m{i}") for i in (1, 2)]
    text = "".join(event_text(event, Output.YAML, 16) for event in events)
    assert [row["message"] for row in yaml.safe_load(text)] == ["m1", "m2"]


def test_progress_is_plain_lines_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    with progress_reporter() as report:
        report("Step 1/2 : FROM x")
        report("done \x1b[2J")
    assert stream.getvalue() == "• Step 1/2 : FROM x\n• done \\x1b[2J\n"


def test_progress_on_a_terminal_is_a_rich_spinner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    with progress_reporter() as report:
        report("Step 2/4 : RUN [bold]pip\x1b]0;x")
    shown = stream.getvalue()
    assert "• Step 2/4 : RUN [bold]pip\\x1b]0;x" in shown  # every message still a line, escaped, no markup
    assert "\x1b]0;x" not in shown
    assert "━" in shown and "\x1b[?25l" in shown  # the bar, and the hidden cursor of a live display


def test_no_color_keeps_progress_plain_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    with progress_reporter() as report:
        report("building")
    assert stream.getvalue() == "• building\n"


def test_plugin_down_reports_through_the_spinner_on_a_terminal(
    listed: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    assert main(["plugin", "down", "echo"]) == 0
    shown = stream.getvalue()
    assert "• echo is down" in shown and "\x1b[?25l" in shown


def test_structured_logs_as_yaml_form_one_list(served: Served, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    writer = Caller(plugin="ops", instance_id="abc123", revision=2)
    served.services.logs.write(writer, "info", "deployed", {"service": "web"})
    served.services.logs.write(writer, "error", "failed", {})
    assert main(["plugin", "logs", "ops", "--structured", "-o", "yaml"]) == 0
    records = yaml.safe_load(capsys.readouterr().out)
    assert [(record["level"], record["message"], record["revision"]) for record in records] == [
        ("info", "deployed", 2),
        ("error", "failed", 2),
    ]
