"""The rules for the words a plugin's commands declare, checked on the host before its routes are stored.

A plugin's command names, parameter names, option flags and choices become click's command tree and, through
shell completion, candidates that the user's shell inserts unquoted: a choice `a$(touch /tmp/x)` would run
on Enter, a `*` would be glob-expanded. So the host refuses a Describe reply with a word outside these
rules, and the roll (or readiness check) fails in one line naming the plugin and the word. Help texts and
metavars are free text: the CLI escapes them when it shows them. The SDK applies the same rules when a
command is defined (sysops_sdk/_commands.py), so an author meets them at import, not at roll.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sysops.core.command_shape import SAFE_WORD, SAFE_WORD_RULE
from sysops.core.manifest import COMMAND_NAME
from sysops.core.names import shown
from sysops.errors import StartFailedError

if TYPE_CHECKING:
    from sysops_sdk.protocol.v1 import plugin_pb2 as pb

#: An option flag: `-s`, `--dry-run`.
FLAG = re.compile(r"--?[A-Za-z][A-Za-z0-9-]*")
#: A parameter's name, the keyword its function receives.
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_commands(plugin: str, descriptor: pb.PluginDescriptor) -> None:
    """Raise StartFailedError if a command of `descriptor` declares a name, flag or choice outside the rules."""
    for command in descriptor.commands:
        if not COMMAND_NAME.fullmatch(command.name):
            _refuse(plugin, f"the command name {shown(command.name)}", "lowercase words like 'greet' or 'db migrate'")
        for param in command.params:
            where = f"command {command.name!r}"
            if not PARAM_NAME.fullmatch(param.name):
                _refuse(plugin, f"{where}: parameter name {shown(param.name)}", "a Python identifier")
            for flag in param.flags:
                if not FLAG.fullmatch(flag):
                    _refuse(plugin, f"{where}: option flag {shown(flag)}", "like '-s' or '--dry-run'")
            for choice in param.choices:
                if not SAFE_WORD.fullmatch(choice):
                    _refuse(plugin, f"{where}: choice {shown(choice)} of {param.name!r}", SAFE_WORD_RULE)


def _refuse(plugin: str, what: str, rule: str) -> None:
    raise StartFailedError(
        f"plugin {plugin!r} declares {what}, which breaks the rule ({rule})",
        hint="fix the command's declaration in the plugin's code (shell completion inserts these words unquoted)",
    )
