"""The full `sysops` command tree: typer's built-in groups joined with every routed plugin command."""

from __future__ import annotations

import click
import typer

from sysops.cli.plugin_cmd import plugin_app
from sysops.settings import Settings

app = typer.Typer(
    name="sysops",
    help="Operations CLI whose commands come from plugins, each running in its own container.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(plugin_app, name="plugin")


@app.callback()
def _root() -> None:
    """Operations CLI whose commands come from plugins, each running in its own container."""


def build_cli(argv: list[str]) -> click.Group:
    """Build the command group: built-ins plus the commands of every active plugin."""
    from sysops.cli.main import unknown_command
    from sysops.cli.routed import add_routes
    from sysops.store import Store

    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    settings = Settings()
    if settings.store_path.exists():
        store = Store(settings.store_path)
        try:
            add_routes(group, store.routes())
        finally:
            store.close()
    if argv and not argv[0].startswith("-") and argv[0] not in group.commands:
        raise unknown_command(argv[0], sorted(group.commands))
    return group
