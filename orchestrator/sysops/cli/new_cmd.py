"""`sysops plugin new NAME [--type TYPE] [--dir DIR]`: scaffold a plugin that passes its tests and comes up at once.

The files come from sysops/scaffold (templates per plugin type); this module checks the command line, refuses
an existing directory or a name no plugin can have (one line, exit 2), writes the files and says what to do next.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import click
import typer

from sysops.errors import UsageError
from sysops.scaffold.render import PLUGIN_TYPES


def _builtin_commands() -> list[str]:
    """The top-level words of the running command tree (sysops's own commands: `plugin`, `serve`, ...)."""
    root = click.get_current_context().find_root().command
    return list(root.commands) if isinstance(root, click.Group) else []


def new(
    name: Annotated[str, typer.Argument(help="The plugin's name: lowercase letters, digits and '-', e.g. disk-report")],
    plugin_type: Annotated[
        str,
        typer.Option(
            "--type", click_type=click.Choice(PLUGIN_TYPES), help="What kind of plugin (docs/plugin-types.md)"
        ),
    ] = PLUGIN_TYPES[0],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="The directory to create (default: ./NAME); must not exist")
    ] = None,
) -> None:
    """Create a new plugin: package, plugin.yaml, pyproject.toml, tests and README, ready for `plugin up`."""
    from sysops.core.names import shown
    from sysops.scaffold.names import check_scaffold_name
    from sysops.scaffold.render import write_plugin

    names = check_scaffold_name(name, _builtin_commands())
    target = directory if directory is not None else Path(name)
    if target.exists() or target.is_symlink():
        raise UsageError(
            f"{shown(str(target))}: already exists", hint="give a new directory with --dir, or remove it first"
        )
    try:
        written = write_plugin(names, plugin_type, target)
    except OSError as error:
        raise UsageError(f"{shown(str(target))}: cannot create the plugin there ({error.strerror or error})") from None
    shown_dir = shlex.quote(str(target))
    listing = "".join(f"  {path.relative_to(target)}\n" for path in written)
    sys.stdout.write(
        f"created {plugin_type} plugin {name} in {target}:\n{listing}"
        f"next:\n  (cd {shown_dir} && pytest)        # its tests, in-process\n"
        f"  sysops plugin up {shown_dir}\n"
    )
