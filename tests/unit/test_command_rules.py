"""The host refuses a plugin whose commands declare a word a shell would misread (core/command_rules.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sysops.core.command_rules import check_commands
from sysops.core.orchestrator import Orchestrator
from sysops.errors import ExitCode, StartFailedError
from sysops_sdk import Plugin, _commands, option, plugin_command
from sysops_sdk.protocol.v1 import plugin_pb2 as pb

from tests.unit.conftest import EchoV1
from tests.unit.test_rollout import _target


def _option(**fields: object) -> pb.CommandSpec:
    param = pb.ParamSpec(**{"name": "mode", "kind": pb.ParamSpec.OPTION, "flags": ["--mode"], **fields})  # type: ignore[arg-type]
    return pb.CommandSpec(name="zap", params=[param])


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (pb.CommandSpec(name="zap$(touch${IFS}/tmp/pwned)"), "the command name 'zap$(touch${IFS}/tmp/pwned)'"),
        (pb.CommandSpec(name="Zap"), "the command name 'Zap'"),
        (_option(choices=["ok", "a$(touch /tmp/pwned)"]), "choice 'a$(touch /tmp/pwned)' of 'mode'"),
        (_option(choices=["*"]), "choice '*' of 'mode'"),
        (_option(choices=["two words"]), "choice 'two words' of 'mode'"),
        (_option(flags=["--mo de"]), "option flag '--mo de'"),
        (_option(flags=["mode"]), "option flag 'mode'"),
        (_option(name="--evil"), "parameter name '--evil'"),
    ],
)
def test_a_hostile_word_is_refused_in_one_line_naming_plugin_and_word(command: pb.CommandSpec, message: str) -> None:
    with pytest.raises(StartFailedError) as refused:
        check_commands("evil", pb.PluginDescriptor(commands=[command]))
    assert str(refused.value).startswith(f"plugin 'evil' declares {message}") or message in str(refused.value)
    assert "plugin 'evil'" in str(refused.value) and "\n" not in str(refused.value)
    assert refused.value.exit_code == ExitCode.START_FAILED


def test_ordinary_commands_pass() -> None:
    command = _option(flags=["--mode", "-m"], choices=["blue-green", "v1.2", "a=b", "x/y", "all"])
    check_commands("fine", pb.PluginDescriptor(commands=[command, pb.CommandSpec(name="db migrate")]))


class HostileChoice(EchoV1):
    name = "hostile"

    @plugin_command("zap")
    @option("--mode", choices=["ok"])
    def zap(self, mode: str = "ok") -> str:
        return mode


# The SDK refuses such a choice at definition; a plugin can still send one (another SDK, or a patched one).
_PARAMS_ATTR = "__sysops_params__"  # where the SDK's decorators keep the parameters (sysops_sdk/_commands.py)
getattr(HostileChoice.zap, _PARAMS_ATTR)[0].choices = ("a$(touch /tmp/pwned)",)


@pytest.fixture
def plugin_classes() -> Iterator[dict[str, type[Plugin]]]:
    yield {"hostile": HostileChoice}


def test_a_roll_of_a_plugin_declaring_a_hostile_choice_fails_and_stores_no_route(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_commands, "_check_choices", lambda param: None)  # as a plugin of another SDK would
    with pytest.raises(StartFailedError, match=r"plugin 'hostile' declares command 'zap': choice 'a\$\(touch"):
        orchestrator.rollout.roll(_target("hostile", name="hostile"))
    assert orchestrator.store.routes() == []
