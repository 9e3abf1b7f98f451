"""Declarative command registration: the decorators plugin authors use and the specs they produce.

`@plugin_command`, `@argument`, `@option` and `@requires_permission` only annotate a function; they never
wrap it, so a decorated function stays a plain callable that unit tests can call directly. The plugin
server collects the annotations (from the plugin class and from module-level functions) into
`CommandDefinition`s, which become `CommandSpec` messages that the CLI turns into real command-line
parameters.
"""

from __future__ import annotations

import enum
import inspect
import json
import math
import re
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_PARAMS_ATTR = "__sysops_params__"
_COMMAND_ATTR = "__sysops_command__"
_PERMISSIONS_ATTR = "__sysops_permissions__"

_MISSING: Any = object()

#: Module-level functions decorated with @plugin_command, in definition order.
_registry: list[Callable[..., Any]] = []

SUPPORTED_TYPES = ("str", "int", "float", "bool", "choice")
#: Largest deadline a command may declare (`@plugin_command(timeout=...)`), in seconds: one day.
MAX_TIMEOUT_SECONDS = 86_400.0


#: The words a shell may receive from a command (the host applies the same rules, core/command_rules.py):
#: shell completion inserts names, flags and choices unquoted, so none may hold `$`, quotes, spaces or globs.
_COMMAND_WORD = re.compile(r"[a-z][a-z0-9-]{0,62}")
_MAX_COMMAND_WORDS = 8
_FLAG = re.compile(r"--?[A-Za-z][A-Za-z0-9-]*")
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SAFE_CHOICE = re.compile(r"[A-Za-z0-9._:/=+@-]+")


class CommandDefinitionError(ValueError):
    """A command is declared in a way the SDK cannot turn into a CLI command."""


@dataclass
class ParamDefinition:
    """One argument or option of a command, as declared by the decorators."""

    name: str
    kind: Literal["argument", "option"]
    flags: tuple[str, ...] = ()
    help: str = ""
    type: str = ""
    default: Any = _MISSING
    required: bool | None = None
    is_flag: bool = False
    choices: tuple[str, ...] = ()
    multiple: bool = False
    metavar: str = ""

    @property
    def has_default(self) -> bool:
        """Say whether a default value was declared or inferred."""
        return self.default is not _MISSING


@dataclass
class CommandDefinition:
    """A command ready to be described and invoked: its name, help, parameters and callable."""

    name: str
    help: str
    params: list[ParamDefinition]
    function: Callable[..., Any]
    permissions: list[str] = field(default_factory=list)
    enum_types: dict[str, type[enum.Enum]] = field(default_factory=dict)
    #: The deadline the author declared, in seconds (None: the orchestrator's default applies).
    timeout: float | None = None
    #: The command only reads (`@plugin_command(read_only=True)`): the viewer role may run it.
    read_only: bool = False

    def convert(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Turn choice strings back into the Enum members the function's annotations ask for."""
        converted = dict(arguments)
        for name, enum_type in self.enum_types.items():
            if isinstance(converted.get(name), str):
                converted[name] = enum_type(converted[name])
        return converted


def plugin_command(
    name: str, *, help: str | None = None, timeout: float | None = None, read_only: bool = False
) -> Callable[[F], F]:
    """Register a function or plugin method as the CLI command `name` ("db migrate" makes a group).

    `timeout` is the command's deadline in seconds (the orchestrator's default, 60 s, applies without
    it); a call still running then is cancelled (see `sysops_sdk.cancelled`). `read_only=True` declares
    that the command changes nothing, so a caller with the viewer role may run it.
    """
    words = name.split()
    if not words or len(words) > _MAX_COMMAND_WORDS or any(not _COMMAND_WORD.fullmatch(word) for word in words):
        raise CommandDefinitionError(
            f"invalid command name {name!r}: use lowercase words of letters, digits and '-', like 'db migrate'"
        )
    _check_timeout(name, timeout)

    def decorate(function: F) -> F:
        setattr(
            function,
            _COMMAND_ATTR,
            {"name": " ".join(words), "help": help, "timeout": timeout, "read_only": bool(read_only)},
        )
        if "." not in function.__qualname__ or "<locals>" in function.__qualname__:
            _registry.append(function)
        return function

    return decorate


def _check_timeout(name: str, timeout: object) -> None:
    if timeout is None:
        return
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT_SECONDS)
    ):
        raise CommandDefinitionError(
            f"command {name!r}: timeout={timeout!r} must be a number of seconds above 0 and at most "
            f"{MAX_TIMEOUT_SECONDS:g}"
        )


def argument(
    name: str,
    *,
    help: str = "",
    type: type | None = None,
    default: Any = _MISSING,
    choices: Sequence[str] | None = None,
    metavar: str = "",
) -> Callable[[F], F]:
    """Declare a positional argument of a command (its Python parameter is `name`)."""
    if not _PARAM_NAME.fullmatch(_python_name(name)):
        raise CommandDefinitionError(f"invalid argument name {name!r}: use a Python identifier (or '-' for '_')")
    param = ParamDefinition(
        name=_python_name(name),
        kind="argument",
        help=help,
        type=_type_name(type) if type else "",
        default=default,
        choices=tuple(choices or _enum_choices(type)),
        metavar=metavar,
    )
    return _attach(param)


def option(
    *flags: str,
    help: str = "",
    type: type | None = None,
    default: Any = _MISSING,
    is_flag: bool = False,
    required: bool | None = None,
    choices: Sequence[str] | None = None,
    multiple: bool = False,
    metavar: str = "",
) -> Callable[[F], F]:
    """Declare an option such as `@option("--strategy", "-s", help=...)`; the longest flag names it."""
    if not flags or not all(flag.startswith("-") for flag in flags):
        raise CommandDefinitionError(f"option flags must start with '-', got {flags!r}")
    bad_flags = [flag for flag in flags if not _FLAG.fullmatch(flag)]
    if bad_flags:
        raise CommandDefinitionError(
            f"invalid option flag {bad_flags[0]!r}: use letters, digits and '-', like '--dry-run'"
        )
    longest = max(flags, key=len)
    param = ParamDefinition(
        name=_python_name(longest.lstrip("-")),
        kind="option",
        flags=tuple(flags),
        help=help,
        type="bool" if is_flag else (_type_name(type) if type else ""),
        default=False if is_flag and default is _MISSING else default,
        required=required,
        is_flag=is_flag,
        choices=tuple(choices or _enum_choices(type)),
        multiple=multiple,
        metavar=metavar,
    )
    return _attach(param)


def requires_permission(permission: str) -> Callable[[F], F]:
    """Declare that running this command needs `permission` (granted by the operator's policy)."""
    if not permission or " " in permission:
        raise CommandDefinitionError(f"invalid permission {permission!r}: use dotted names like 'service.scale'")

    def decorate(function: F) -> F:
        existing: list[str] = list(getattr(function, _PERMISSIONS_ATTR, []))
        setattr(function, _PERMISSIONS_ATTR, [permission, *existing])
        return function

    return decorate


def _attach(param: ParamDefinition) -> Callable[[F], F]:
    _check_choices(param)

    def decorate(function: F) -> F:
        existing: list[ParamDefinition] = list(getattr(function, _PARAMS_ATTR, []))
        # Decorators apply bottom-up; prepend so the list reads in source order, as click does.
        setattr(function, _PARAMS_ATTR, [param, *existing])
        return function

    return decorate


def _check_choices(param: ParamDefinition) -> None:
    """Refuse a choice that shell completion could not offer safely (it inserts candidates unquoted)."""
    bad_choices = [choice for choice in param.choices if not _SAFE_CHOICE.fullmatch(str(choice))]
    if bad_choices:
        raise CommandDefinitionError(
            f"{param.kind} {param.name!r}: invalid choice {bad_choices[0]!r}: use letters, digits and . _ : / = + @ - "
            "only (shell completion offers choices unquoted)"
        )


def _python_name(name: str) -> str:
    return name.replace("-", "_")


def _enum_choices(python_type: Any) -> tuple[str, ...]:
    if isinstance(python_type, type) and issubclass(python_type, enum.Enum):
        return tuple(str(member.value) for member in python_type)
    return ()


def _type_name(python_type: Any) -> str:
    if isinstance(python_type, type) and issubclass(python_type, enum.Enum):
        return "choice"
    names = {str: "str", int: "int", float: "float", bool: "bool"}
    if python_type in names:
        return names[python_type]
    raise CommandDefinitionError(f"unsupported parameter type {python_type!r}: use str, int, float, bool")


def command_definition(function: Callable[..., Any]) -> CommandDefinition:
    """Build the full definition of a decorated callable, inferring types and defaults from its signature."""
    marker = getattr(function, _COMMAND_ATTR, None)
    if marker is None:
        raise CommandDefinitionError(f"{function!r} is not decorated with @plugin_command")
    signature = inspect.signature(function)
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # unresolvable forward references: fall back to declared types only
        hints = {}
    declared = {param.name: param for param in getattr(function, _PARAMS_ATTR, [])}
    params: list[ParamDefinition] = []
    for parameter in signature.parameters.values():
        if parameter.name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        param = declared.pop(parameter.name, None) or ParamDefinition(
            name=parameter.name,
            kind="argument" if parameter.default is parameter.empty else "option",
            flags=("--" + parameter.name.replace("_", "-"),) if parameter.default is not parameter.empty else (),
        )
        _complete_from_signature(param, parameter, hints.get(parameter.name))
        _check_choices(param)  # a Literal or Enum annotation brings its own
        params.append(param)
    if declared:
        unknown = ", ".join(sorted(declared))
        raise CommandDefinitionError(
            f"command {marker['name']!r} declares {unknown} but {function.__name__}() has no such parameter"
        )
    help_text = marker["help"] or inspect.getdoc(function) or ""
    enum_types = {name: hint for name, hint in hints.items() if isinstance(hint, type) and issubclass(hint, enum.Enum)}
    return CommandDefinition(
        name=marker["name"],
        help=help_text,
        params=params,
        function=function,
        permissions=list(getattr(function, _PERMISSIONS_ATTR, [])),
        enum_types=enum_types,
        timeout=float(marker["timeout"]) if marker.get("timeout") is not None else None,
        read_only=bool(marker.get("read_only", False)),
    )


def _complete_from_signature(param: ParamDefinition, parameter: inspect.Parameter, hint: Any) -> None:
    if not param.has_default and parameter.default is not parameter.empty:
        param.default = parameter.default
    if hint is not None and not param.type:
        param.type, choices = _type_from_hint(hint)
        if choices and not param.choices:
            param.choices = choices
    if not param.type:
        param.type = "choice" if param.choices else _type_of_value(param.default)
    if param.choices:
        param.type = "choice"
    if param.type == "bool" and param.kind == "option":
        param.is_flag = True
        if not param.has_default:
            param.default = False
    if param.required is None:
        param.required = not param.has_default
    if param.has_default:
        param.default = _json_ready(param.default)


def _type_from_hint(hint: Any) -> tuple[str, tuple[str, ...]]:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "choice", tuple(str(value) for value in typing.get_args(hint))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _type_from_hint(inner[0]) if len(inner) == 1 else ("str", ())
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "choice", tuple(str(member.value) for member in hint)
    names = {str: "str", int: "int", float: "float", bool: "bool"}
    return names.get(hint, "str"), ()


def _type_of_value(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def _json_ready(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    try:
        json.dumps(value)
    except TypeError:
        return str(value)
    return value


def has_command_marker(value: object) -> bool:
    """Whether a class attribute (a function, staticmethod or classmethod) is decorated with @plugin_command."""
    function = getattr(value, "__func__", value)
    return callable(function) and hasattr(function, _COMMAND_ATTR)


def collect_commands(plugin: object) -> list[CommandDefinition]:
    """Find the commands of a plugin: its decorated methods, then decorated module-level functions."""
    found: dict[str, CommandDefinition] = {}
    seen_functions: set[int] = set()
    for attribute in dir(type(plugin)):
        raw = inspect.getattr_static(type(plugin), attribute, None)
        function = getattr(raw, "__func__", raw)
        if has_command_marker(raw):
            definition = command_definition(function)
            definition.function = getattr(plugin, attribute)
            _add_unique(found, definition)
            seen_functions.add(id(function))
    for function in _registry:
        if id(function) not in seen_functions:
            _add_unique(found, command_definition(function))
    return list(found.values())


def _add_unique(found: dict[str, CommandDefinition], definition: CommandDefinition) -> None:
    if definition.name in found:
        first = found[definition.name].function
        raise CommandDefinitionError(
            f"command {definition.name!r} is defined twice: by {_describe(first)} and {_describe(definition.function)}"
        )
    found[definition.name] = definition


def _describe(function: Callable[..., Any]) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', function)!s}"
