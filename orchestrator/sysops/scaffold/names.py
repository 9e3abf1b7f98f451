"""The names a scaffolded plugin's files use, derived from its plugin name, and the refusal of a bad name.

A plugin name is a DNS-1123 label (core/names.py). A scaffold needs more of it: the name is also the first
word of the plugin's commands (`sysops NAME greet`), which must start with a letter and must not be one of
sysops's own words, and, with '-' as '_', the start of a Python package name and of a config section. That
package must not be named like the scaffold's test module (tests/test_plugin.py), which would shadow it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sysops.core.installation_config import PLUGIN_DIRS_KEY
from sysops.core.manifest import SIDE_BY_SIDE_MARK
from sysops.core.names import PLUGIN_NAME_RULE, is_plugin_name, shown
from sysops.errors import UsageError
from sysops.reserved import RESERVED_COMMANDS

#: The module name of the test file every scaffold writes (templates/*/test_plugin.py.tmpl).
TEST_MODULE = "test_plugin"


@dataclass(frozen=True)
class ScaffoldNames:
    """Every name the templates use, derived from one plugin name such as 'disk-report'."""

    plugin: str  # disk-report: plugin.yaml's name, the command group word
    package: str  # disk_report_plugin: the Python package
    class_name: str  # DiskReportPlugin
    distribution: str  # sysops-disk-report: pyproject.toml's project name
    section: str  # disk_report: a configuration plugin's config section, a metric name's start

    @classmethod
    def of(cls, plugin: str) -> ScaffoldNames:
        """The names for `plugin` (assumed checked by `check_scaffold_name`)."""
        snake = plugin.replace("-", "_")
        camel = "".join(word.capitalize() for word in plugin.split("-"))
        return cls(plugin, f"{snake}_plugin", f"{camel}Plugin", f"sysops-{plugin}", snake)


def check_scaffold_name(name: str, builtin_commands: Iterable[str] = ()) -> ScaffoldNames:
    """The names for `name`, or UsageError (exit 2) in one line saying what is wrong with it.

    `builtin_commands` are the CLI's top-level command words besides RESERVED_COMMANDS (the running command
    tree's, so a word added to the CLI later is refused too).
    """
    reserved = sorted({*RESERVED_COMMANDS, *builtin_commands})
    if not is_plugin_name(name):
        problem = f"a plugin name has {PLUGIN_NAME_RULE}"
    elif SIDE_BY_SIDE_MARK in name:
        problem = f"{SIDE_BY_SIDE_MARK!r} is kept for side-by-side versions (NAME--vMAJOR)"
    elif not name[0].isalpha():
        problem = "it must start with a letter (it is the first word of the plugin's commands and its package name)"
    elif name in reserved:
        problem = f"it is a sysops command ({', '.join(reserved)} are reserved)"
    elif name.replace("-", "_") == PLUGIN_DIRS_KEY:
        problem = f"its config section {PLUGIN_DIRS_KEY!r} belongs to sysops"
    elif ScaffoldNames.of(name).package == TEST_MODULE:
        problem = f"its package {TEST_MODULE!r} would be shadowed by the scaffold's tests/{TEST_MODULE}.py"
    else:
        return ScaffoldNames.of(name)
    raise UsageError(f"invalid plugin name {shown(name)}: {problem}", hint="choose another name, e.g. 'disk-report'")
