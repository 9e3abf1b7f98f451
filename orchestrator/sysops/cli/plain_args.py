"""Plain arguments of a routed command, parsed without click: the common case of `sysops <command>`.

Importing click and building the command costs more than the call itself (about 20 ms of the CLI's ~50).
`sysops greet World`, where every word after the command's name is a value of its positional arguments in
order, is answered here with exactly the values click would pass: each argument converted as click's
STRING, INT, FLOAT or Choice types do, each option at its default. Anything else (a word starting with
`-`, so `--help`, options, `--` and negative numbers; a missing or extra word; a value click would
reject; a parameter kind or default whose click value is not obviously the same) is None, and the caller
lets the click command built by cli/routed.py parse it, with its usage errors and help.
"""

from __future__ import annotations

from typing import Any

from sysops.core.command_shape import ARGUMENT, CommandShape, ParamShape

#: The output format when --output is not given (cli/routed.py's default).
_DEFAULT_OUTPUT = "text"


class _NotPlain(Exception):
    """The argv is not plain for this command: click parses it."""


def plain_call(shapes: list[CommandShape], argv: list[str]) -> tuple[CommandShape, dict[str, Any], str] | None:
    """The command `argv` names among `shapes`, its arguments and output format; None unless argv is plain."""
    matches = [shape for shape in shapes if argv[: len(shape.name.split(" "))] == shape.name.split(" ")]
    if len(matches) != 1:
        return None
    shape = matches[0]
    values = argv[len(shape.name.split(" ")) :]
    if any(value.startswith("-") for value in values):
        return None
    try:
        arguments = _arguments(shape.params, values)
    except _NotPlain:
        return None
    return shape, arguments, _DEFAULT_OUTPUT  # no --output given, and a declared `output` is an argument


def _arguments(params: tuple[ParamShape, ...], values: list[str]) -> dict[str, Any]:
    positional = [param for param in params if param.kind == ARGUMENT]
    if len(values) != len(positional):
        raise _NotPlain
    words = iter(values)
    arguments: dict[str, Any] = {}
    for param in params:
        if not param.name.isidentifier() or param.multiple:
            raise _NotPlain
        if param.kind == ARGUMENT:
            if param.name != param.name.lower():  # click lowercases an argument's name
                raise _NotPlain
            arguments[param.name] = _converted(param, next(words))
        else:
            arguments[param.name] = _option_default(param)
    return arguments


def _converted(param: ParamShape, word: str) -> Any:
    """`word` as click's type for the parameter converts it (click.STRING, INT, FLOAT, Choice)."""
    try:
        if param.type == "str":
            return word
        if param.type == "int":
            return int(word)
        if param.type == "float":
            return float(word)
    except ValueError:
        raise _NotPlain from None
    if param.type == "choice" and word in param.choices:
        return word
    raise _NotPlain


def _option_default(param: ParamShape) -> Any:
    """The value click passes for an option not given: its default, when that needs no conversion."""
    default = param.default
    if param.is_flag:
        if isinstance(default, bool):
            return default
        raise _NotPlain
    if param.required:
        raise _NotPlain  # click says it is missing
    if default is None:
        return None
    kept = (
        (param.type == "str" and isinstance(default, str))
        or (param.type == "int" and type(default) is int)
        or (param.type == "float" and type(default) is float)
        or (param.type == "choice" and isinstance(default, str) and default in param.choices)
    )
    if not kept:
        raise _NotPlain
    return default
