"""cli/plain_args.py: plain argv of a routed command gives exactly what the click command would pass, else None."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from sysops.cli.plain_args import plain_call
from sysops.cli.routed import build_command
from sysops.core.command_shape import ARGUMENT, OPTION, CommandShape, ParamShape

GREET = CommandShape(
    name="greet",
    plugin="hello",
    params=(
        ParamShape(name="name", kind=ARGUMENT, type="str", required=True),
        ParamShape(name="greeting", kind=OPTION, type="choice", has_default=True, default="hello",
                   flags=("--greeting",), choices=("hello", "hi")),
        ParamShape(name="times", kind=OPTION, type="int", has_default=True, default=1, flags=("--times",)),
        ParamShape(name="ratio", kind=OPTION, type="float", has_default=True, default=0.5, flags=("--ratio",)),
        ParamShape(name="label", kind=OPTION, type="str", flags=("--label",)),
        ParamShape(name="shout", kind=OPTION, type="bool", has_default=True, default=False, is_flag=True,
                   flags=("--shout",)),
    ),
)  # fmt: skip
NUMBERS = CommandShape(
    name="db add",
    plugin="db",
    params=(
        ParamShape(name="count", kind=ARGUMENT, type="int", required=True),
        ParamShape(name="scale", kind=ARGUMENT, type="float", required=True),
        ParamShape(name="mode", kind=ARGUMENT, type="choice", required=True, choices=("fast", "slow")),
        ParamShape(name="output", kind=OPTION, type="str", has_default=True, default="table", flags=("--output",)),
    ),
)


def _through_click(shape: CommandShape, argv: list[str]) -> tuple[dict[str, Any], str]:
    """What the click command of cli/routed.py passes to its invoker for `argv`."""
    called: list[tuple[dict[str, Any], str]] = []
    command = build_command(shape, shape.name.split(" ")[-1], lambda _s, args, out: called.append((args, out)))
    command.main(argv[len(shape.name.split(" ")) :], standalone_mode=False)
    return called[0]


@pytest.mark.parametrize(
    ("shape", "argv"),
    [
        (GREET, ["greet", "World"]),
        (GREET, ["greet", ""]),
        (GREET, ["greet", "two words"]),
        (GREET, ["greet", "\x1b[31mred"]),
        (NUMBERS, ["db", "add", "3", "1.5", "fast"]),
        (NUMBERS, ["db", "add", " 7 ", "2", "slow"]),
        (NUMBERS, ["db", "add", "1_000", "1e3", "fast"]),
    ],
)
def test_plain_argv_gives_what_click_gives(shape: CommandShape, argv: list[str]) -> None:
    plain = plain_call([GREET, NUMBERS], argv)
    assert plain is not None
    found, arguments, output = plain
    assert found is shape
    assert (arguments, output) == _through_click(shape, argv)
    assert [type(value) for value in arguments.values()] == [
        type(value) for value in _through_click(shape, argv)[0].values()
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["greet"],  # missing argument: click says so
        ["greet", "a", "b"],  # extra argument
        ["greet", "--help"],
        ["greet", "World", "--shout"],
        ["greet", "--", "World"],
        ["greet", "-x"],
        ["db", "add", "-3", "1", "fast"],  # a negative number is click's to parse
        ["db", "add", "x", "1", "fast"],  # not an int: click's error
        ["db", "add", "1", "x", "fast"],
        ["db", "add", "1", "1", "medium"],  # not a choice
        ["db"],  # a group: click shows its commands
        ["nothing"],
    ],
)
def test_anything_but_plain_argv_is_left_to_click(argv: list[str]) -> None:
    assert plain_call([GREET, NUMBERS], argv) is None


@pytest.mark.parametrize(
    "param",
    [
        ParamShape(name="tags", kind=OPTION, type="str", multiple=True, flags=("--tag",)),
        ParamShape(name="level", kind=OPTION, type="int", required=True, flags=("--level",)),
        ParamShape(name="level", kind=OPTION, type="int", has_default=True, default="3", flags=("--level",)),
        ParamShape(name="ratio", kind=OPTION, type="float", has_default=True, default=1, flags=("--ratio",)),
        ParamShape(name="flag", kind=OPTION, type="bool", has_default=True, default="yes", is_flag=True, flags=("-f",)),
        ParamShape(name="Name", kind=ARGUMENT, type="str", required=True),
        ParamShape(name="ok", kind=ARGUMENT, type="bool", required=True),
    ],
)
def test_a_parameter_whose_click_value_is_not_obvious_is_left_to_click(param: ParamShape) -> None:
    shape = CommandShape(name="run", plugin="p", params=(param,))
    words = ["x"] if param.kind == ARGUMENT else []
    assert plain_call([shape], ["run", *words]) is None


def test_the_plain_path_of_the_cli_imports_no_click() -> None:
    """`sysops greet World` with a stand-in host call: click is not imported on the way."""
    script = (
        "import sys\n"
        "from sysops.cli import main as cli_main, routed_source\n"
        "from sysops.core.command_shape import CommandShape, ParamShape\n"
        "shape = CommandShape('greet', 'hello', '', (ParamShape('name', 'argument', 'str', required=True),))\n"
        "seen = []\n"
        "routed_source.context_commands = lambda prefix: routed_source.Commands("
        "[shape], lambda s, a, o: seen.append((a, o)))\n"
        "code = cli_main.main(['greet', 'World'])\n"
        "assert code == 0 and seen == [({'name': 'World'}, 'text')], (code, seen)\n"
        "assert 'click' not in sys.modules, 'click was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
