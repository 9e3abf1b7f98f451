"""The full `sysops` command tree: typer's built-in groups joined with every routed plugin command."""

from __future__ import annotations

import difflib
import os
import sys

import click
import typer

from sysops.cli.approve_cmd import approve
from sysops.cli.check_cmd import check
from sysops.cli.completion import completion
from sysops.cli.discover_cmd import discover
from sysops.cli.doctor_cmd import doctor
from sysops.cli.events_cmd import events_app
from sysops.cli.host_cmd import host_app
from sysops.cli.index_cmd import index_app, search
from sysops.cli.install_cmd import install, uninstall, upgrade
from sysops.cli.key_cmd import key_app
from sysops.cli.new_cmd import new
from sysops.cli.plugin_cmd import plugin_app
from sysops.cli.plugin_test_cmd import test_command
from sysops.cli.registry_cmd import pull, push
from sysops.cli.server_cmd import context_app, serve
from sysops.cli.services_cmd import alerts_app, config, metrics, permissions, publish
from sysops.cli.sign_cmd import sign_command, verify_command
from sysops.cli.system_config_cmd import config_app
from sysops.errors import SysopsError, UsageError
from sysops.nodeagent.command import node_agent

app = typer.Typer(
    name="sysops",
    help="Operations CLI whose commands come from plugins, each running in its own container.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(plugin_app, name="plugin")
app.add_typer(context_app, name="context")
app.add_typer(host_app, name="host")
app.command("serve")(serve)
app.command("node-agent")(node_agent)
app.add_typer(events_app, name="events")
app.add_typer(index_app, name="index")
app.add_typer(key_app, name="key")
app.add_typer(alerts_app, name="alerts")
app.add_typer(config_app, name="config")
app.command("metrics")(metrics)
app.command("completion")(completion)
plugin_app.command("permissions")(permissions)
plugin_app.command("config")(config)
plugin_app.command("discover")(discover)
plugin_app.command("doctor")(doctor)
plugin_app.command("search")(search)
plugin_app.command("sign")(sign_command)
plugin_app.command("verify")(verify_command)
plugin_app.command("push")(push)
plugin_app.command("pull")(pull)
plugin_app.command("approve")(approve)
plugin_app.command("check")(check)
plugin_app.command("test")(test_command)
plugin_app.command("new")(new)
plugin_app.command("install")(install)
plugin_app.command("upgrade")(upgrade)
plugin_app.command("uninstall")(uninstall)
events_app.command("publish")(publish)


@app.callback()
def _root(
    insecure: bool = typer.Option(
        False, "--insecure", help="Talk plaintext (no TLS) to the server of the context (SYSOPS_INSECURE=1)"
    ),
) -> None:
    """Operations CLI whose commands come from plugins, each running in its own container."""
    if insecure:  # main() already takes a leading --insecure off for the routed commands' fast path
        os.environ["SYSOPS_INSECURE"] = "1"


def unknown_command(word: str, known: list[str]) -> UsageError:
    """An error for an unknown command that suggests close names."""
    close = difflib.get_close_matches(word, known, n=3, cutoff=0.5)
    suggestion = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return UsageError(f"unknown command {word!r}{suggestion}", hint="`sysops --help` lists the commands")


def build_cli(argv: list[str]) -> click.Group:
    """Build the command group: built-ins plus the commands of every active plugin."""
    from sysops.cli.routed import add_routes, context_commands

    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    if argv and argv[0] in group.commands:
        return group  # built-ins work even when the current context's server is down
    try:
        commands = context_commands()
        commands.close()  # a routed command is run by main's fast path; a late call here reconnects
        add_routes(group, commands)
    except SysopsError as error:
        if argv and not argv[0].startswith("-"):
            raise
        sys.stderr.write(f"warning: plugin commands not listed: {error}\n")
    if argv and not argv[0].startswith("-") and argv[0] not in group.commands:
        raise unknown_command(argv[0], sorted(group.commands))
    return group
