"""The SDK refuses, when a command is defined, the words the host would refuse (core/command_rules.py):
names, flags and choices that shell completion would hand a shell unquoted."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Literal

import pytest
from sysops_sdk import CommandDefinitionError, argument, option, plugin_command
from sysops_sdk._commands import _registry, command_definition


class Hostile(enum.Enum):
    RUN = "a$(touch /tmp/pwned)"


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda: option("--mode", choices=["ok", "a$(touch /tmp/pwned)"]), "invalid choice 'a$(touch /tmp/pwned)'"),
        (lambda: option("--mode", choices=["*"]), "invalid choice '*'"),
        (lambda: argument("mode", choices=["two words"]), "invalid choice 'two words'"),
        (lambda: option("--mode", type=Hostile), "invalid choice 'a$(touch /tmp/pwned)'"),
        (lambda: option("--mo$de"), "invalid option flag '--mo$de'"),
        (lambda: option("--mode", "-"), "invalid option flag '-'"),
        (lambda: argument("x y"), "invalid argument name 'x y'"),
        (lambda: plugin_command("zap$(touch${IFS}/tmp/pwned)"), "invalid command name"),
        (lambda: plugin_command("zäp"), "invalid command name"),
    ],
)
def test_a_word_a_shell_would_misread_is_refused_at_definition(declare: Callable[[], object], message: str) -> None:
    with pytest.raises(CommandDefinitionError) as refused:
        declare()
    assert message in str(refused.value)


def test_ordinary_words_are_accepted() -> None:
    option("--strategy", "-s", choices=["blue-green", "v1.2", "a=b", "x/y", "user@host"])
    argument("target-name", choices=["all"])
    plugin_command("db migrate-all")


def test_a_literal_annotations_choices_are_checked_when_the_command_is_read() -> None:
    @plugin_command("zap")
    def zap(mode: Literal["ok", "a b"] = "ok") -> str:
        return mode

    _registry.remove(zap)  # a function defined here would be served by every later test's plugin
    with pytest.raises(CommandDefinitionError, match="invalid choice 'a b'"):
        command_definition(zap)
