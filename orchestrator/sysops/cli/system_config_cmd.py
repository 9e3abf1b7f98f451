"""`sysops config`: the system configuration, checked against what sysops and its configuration plugins declare.

    sysops config validate [FILE]   check FILE (default: the installation's config file) against the
                                    installed configuration plugins; each problem on its own line, exit 4
    sysops config show [-o json]    every declared key of the host's config file: value, default, type,
                                    owner (sysops or the plugin and version), source (file, default, unset)

Not `sysops plugin config NAME` (one plugin's own `config:` keys, values from the policy and `set`). The
host (or server) knows which plugins are installed, so the CLI sends it the file's text to validate
(services/system_config.py); any role may validate and show. Section names, help texts and problems may
quote a plugin's manifest, so everything printed is escaped (cli/output.py, safe_text).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from sysops.cli.output import emit
from sysops.cli.plugin_cmd import Output, OutputOption, control_client, progress
from sysops.core import safe_yaml
from sysops.core.installation_config import CONFIG_VARIABLE, ConfigFileError, config_path
from sysops.errors import ExitCode
from sysops.safe_text import for_terminal

config_app = typer.Typer(
    help="The system configuration: sysops's own keys and the sections configuration plugins own.",
    no_args_is_help=True,
)
SHOW_COLUMNS = ["key", "value", "default", "owner", "source"]


def _file_text(file: Path | None) -> tuple[str, str]:
    """The file to validate (as the user named it) and its text; a missing default file is an empty one."""
    path = file if file is not None else config_path()
    if file is None and not os.environ.get(CONFIG_VARIABLE) and not os.path.lexists(path):
        progress(f"{path}: no configuration file; checking an empty configuration")
        return str(path), ""
    try:
        return str(path), safe_yaml.read_text(path)
    except FileNotFoundError:
        raise ConfigFileError(f"{path}: no such configuration file") from None
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except safe_yaml.InputLimitError as exc:
        raise ConfigFileError(f"{path}: {exc}") from None


def _invalid(problems: list[str]) -> NoReturn:
    """Print each problem on its own line (escaped) and exit 4."""
    sys.stderr.write("".join(f"error: {for_terminal(problem, 2000)}\n" for problem in problems))
    raise typer.Exit(int(ExitCode.INVALID_PLUGIN))


@config_app.command("validate")
def validate(
    file: Annotated[
        Path | None,
        typer.Argument(help="Config file to check (default: $SYSOPS_SYSTEM_CONFIG, else $SYSOPS_HOME/config.yaml)"),
    ] = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """Check a config file against sysops's keys and the installed configuration plugins' sections (exit 4)."""
    name, text = _file_text(file)
    result = control_client().act("system-config-validate", {"file": name, "text": text})
    problems = [str(problem) for problem in result.get("problems", [])]
    if output.is_data:
        emit(result, output)
        if problems:
            raise typer.Exit(int(ExitCode.INVALID_PLUGIN))
        return
    if problems:
        _invalid(problems)
    progress(f"{name}: valid")


def _show_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": row.get("key"),
        "value": json.dumps(row.get("value")),
        "default": json.dumps(row.get("default")),
        "owner": row.get("owner"),
        "source": row.get("source"),
    }


@config_app.command("show")
def show(output: OutputOption = Output.TEXT) -> None:
    """Show every key of the system configuration: value, default, owner and source (exit 4 if invalid)."""
    data = control_client().view("system-config", "")
    problems = [str(problem) for problem in data.get("problems", [])]
    if output.is_data:
        emit(data, output)
    else:
        missing = "" if data.get("exists") else " (no such file: defaults only)"
        progress(f"configuration file: {data.get('file')}{missing}")
        emit([_show_row(row) for row in data.get("keys", [])], "text", SHOW_COLUMNS)
    if problems:
        if output.is_data:
            raise typer.Exit(int(ExitCode.INVALID_PLUGIN))
        _invalid(problems)
