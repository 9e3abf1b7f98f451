"""`sysops plugin approve NAME`: review an upgrade the held-upgrade gate stopped, then roll it.

The held record comes from the host or server of the current context (control API view `held`); the
command prints what the new version asks for beyond the serving one, the ratings before and after, and the
manifest difference, then (after a prompt, or with --yes) asks the host to approve exactly that digest
(action `upgrade-approve`, admin) and rolls the plugin's source directory again, which the gate now admits.
Exit codes: 8 when nothing is held for NAME, 2 when the held record changed since it was shown or the
prompt cannot be asked (no terminal: pass --yes), 9 when the caller is not admin; the roll's own otherwise.
"""

from __future__ import annotations

import difflib
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from sysops.cli.plugin_cmd import control_client, progress
from sysops.core.names import check_plugin_name
from sysops.errors import UsageError
from sysops.safe_text import escape_controls


def approve(
    name: Annotated[str, typer.Argument(help="Plugin name (or side-by-side key NAME--vMAJOR)")],
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Approve without asking (after showing the difference)")
    ] = False,
) -> None:
    """Show what a held upgrade asks for beyond the serving version, then approve and roll it."""
    from sysops.core.held_upgrades import APPROVE_ACTION, HELD_VIEW

    check_plugin_name(name)
    client = control_client()
    held = client.view(HELD_VIEW, name)
    typer.echo(escape_controls("\n".join(held_difference(held))))
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"approving the upgrade of {name} needs a yes", hint="pass --yes, or run it in a terminal")
        typer.confirm(f"approve {name} {held['version']} and roll it now?", abort=True)
    client.act(APPROVE_ACTION, {"plugin": name, "digest": held["digest"]})
    source = Path(str(held["source"]))
    if not source.is_dir():
        raise UsageError(
            f"approved {name} {held['version']}, but its source {source} is not a directory here to roll from",
            hint="run the `sysops plugin up` or `plugin install` that brought it again: it is admitted now",
        )
    started = time.monotonic()
    instance, _ = client.up(source, key=name)
    progress(
        f"{instance.plugin} {instance.version} ready (revision {instance.revision}, {time.monotonic() - started:.1f}s)"
    )


def held_difference(held: dict[str, Any]) -> list[str]:
    """The lines describing a held upgrade: versions, what grew, ratings, and the manifest's unified diff."""
    import yaml

    lines = [
        f"held upgrade of {held['key']}: {held['serving_version']} (serving) -> {held['version']}",
        "asks for more than the serving version:",
        *(f"  + {line}" for line in held["grew"]),
        f"rating: {held['rating_before']} -> {held['rating_after']}",
        "manifest difference (after policy):",
    ]
    before = yaml.safe_dump(held["serving_manifest"], sort_keys=True).splitlines()
    after = yaml.safe_dump(held["manifest"], sort_keys=True).splitlines()
    diff = difflib.unified_diff(before, after, f"{held['serving_version']}", f"{held['version']}", lineterm="", n=1)
    lines += [f"  {line}" for line in diff]
    return lines
