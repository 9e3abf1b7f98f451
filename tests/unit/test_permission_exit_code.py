"""A routed command stopped by a missing grant exits 9 at the CLI (POLICY_DENIED), whether the host refused it
or the plugin's own server did, or a host service the command called was refused; other failures exit 1.
In-process: the fake driver's plugin thread behind the host's call socket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sysops.cli.main import main
from sysops.core.orchestrator import Orchestrator
from sysops.errors import ExitCode
from sysops.host.call_server import CallServer
from sysops_sdk import PermissionDeniedError, Plugin, plugin_command

from tests.unit.test_rollout import _target


class Needy(Plugin):
    name = "needy"
    version = "1.0.0"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("needy-peek")
    def peek(self) -> str:
        raise PermissionDeniedError("host refused service 'config' method 'get': plugin 'needy' needs permission")

    @plugin_command("needy-break")
    def broken(self) -> str:
        raise RuntimeError("broken")


@pytest.fixture
def plugin_classes() -> Iterator[dict[str, type[Plugin]]]:
    yield {"needy": Needy}


def test_a_refused_host_service_exits_9_and_another_failure_1(
    orchestrator: Orchestrator, call_host: CallServer, capsys: pytest.CaptureFixture[str]
) -> None:
    orchestrator.rollout.roll(_target("needy", name="needy"))
    assert main(["needy-peek"]) == ExitCode.POLICY_DENIED
    assert "needs permission" in capsys.readouterr().err
    assert main(["needy-break"]) == ExitCode.COMMAND_FAILED
