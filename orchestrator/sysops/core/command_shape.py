"""What the CLI needs to parse a routed command, as plain JSON-able data instead of a CommandSpec protobuf.

The host reads the CommandSpec a plugin declared (stored with its route) and sends this shape over the
call socket, so the CLI builds its click command without importing protobuf. Remote contexts convert the
specs of the control server's Routes reply the same way (`shape_from_spec`). Texts are the plugin's own:
the CLI escapes them before showing them. Standard library only at import time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from typing import Any

ARGUMENT = "argument"
OPTION = "option"

#: What a shell may be handed as a completion candidate or a choice: no quote, space, `$`, glob character or
#: control that the shell would read as syntax (shell completion inserts candidates unquoted).
SAFE_WORD = re.compile(r"[A-Za-z0-9._:/=+@-]+")
SAFE_WORD_RULE = "letters, digits and . _ : / = + @ - only"


@dataclass(frozen=True)
class ParamShape:
    """One argument or option of a command."""

    name: str
    kind: str  # ARGUMENT | OPTION
    type: str  # str | int | float | bool | choice
    help: str = ""
    has_default: bool = False
    default: Any = None
    required: bool = False
    is_flag: bool = False
    multiple: bool = False
    flags: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    metavar: str = ""


@dataclass(frozen=True)
class CommandShape:
    """A routed command: its full name ("db migrate"), the plugin that provides it, its help and parameters."""

    name: str
    plugin: str
    help: str = ""
    params: tuple[ParamShape, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The shape as a JSON-able dict (built by hand: dataclasses.asdict deep-copies, 10 times slower)."""
        return {
            "name": self.name,
            "plugin": self.plugin,
            "help": self.help,
            "params": [{name: getattr(param, name) for name in _PARAM_FIELDS} for param in self.params],
        }

    @classmethod
    def from_json(cls, data: Any) -> CommandShape:
        """A shape from `to_json`'s dict; ValueError if it is not one."""
        try:
            params = tuple(_param(param) for param in data["params"])
            shape = cls(name=data["name"], plugin=data["plugin"], help=data["help"], params=params)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a command shape ({type(exc).__name__}: {exc})") from None
        if not all(isinstance(text, str) for text in (shape.name, shape.plugin, shape.help)):
            raise ValueError("not a command shape (name, plugin and help must be text)")
        return shape


_PARAM_FIELDS = tuple(field.name for field in fields(ParamShape))


def _param(data: dict[str, Any]) -> ParamShape:
    fields = dict(data)
    fields["flags"], fields["choices"] = tuple(fields["flags"]), tuple(fields["choices"])
    param = ParamShape(**fields)
    texts = (param.name, param.kind, param.type, param.help, param.metavar, *param.flags, *param.choices)
    if not all(isinstance(text, str) for text in texts) or param.kind not in (ARGUMENT, OPTION):
        raise TypeError(f"parameter {param.name!r} is malformed")
    return param


def shape_from_spec(command: str, plugin: str, spec: bytes) -> CommandShape:
    """The shape of a stored (serialized) CommandSpec. Imports protobuf: call it in the host or a remote client."""
    from sysops_sdk.protocol.v1 import plugin_pb2 as pb

    message = pb.CommandSpec.FromString(spec)
    params = tuple(
        ParamShape(
            name=param.name,
            kind=ARGUMENT if param.kind == pb.ParamSpec.ARGUMENT else OPTION,
            type=param.type,
            help=param.help,
            has_default=bool(param.default_json),
            default=_default(param.default_json),
            required=param.required,
            is_flag=param.is_flag,
            multiple=param.multiple,
            flags=tuple(param.flags),
            choices=tuple(param.choices),
            metavar=param.metavar,
        )
        for param in message.params
    )
    return CommandShape(name=command, plugin=plugin, help=message.help, params=params)


def _default(default_json: str) -> Any:
    """The declared default; none for one that is not JSON (the plugin's mistake must not break the CLI)."""
    if not default_json:
        return None
    try:
        return json.loads(default_json)
    except (ValueError, RecursionError):
        return None
