"""`sysops plugin logs NAME --structured`: the records a plugin wrote through the `logs` host service, with the
identity the host stamped on them, through a control server in this process (fake driver)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from sysops.cli.main import main
from sysops.errors import ExitCode
from sysops.services.dispatch import Caller

from tests.unit.test_operator_surface import Served, served  # noqa: F401  (the fixture)

WRITER = Caller(plugin="ops", instance_id="abc123", revision=2)


def test_records_print_with_their_identity_and_escaped(served: Served, capsys: Any) -> None:  # noqa: F811
    served.services.logs.write(WRITER, "info", "deployed", {"service": "web", "replicas": 3})
    served.services.logs.write(WRITER, "error", "bad \x1b]52;c;ZXZpbA==\x07 line\nsecond", {})
    assert main(["plugin", "logs", "ops", "--structured"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith('INFO    revision 2 instance abc123: deployed service="web" replicas=3')
    assert "\x1b" not in lines[1] and "\\x1b]52" in lines[1] and "\\x0a" in lines[1]
    assert main(["plugin", "logs", "ops", "--structured", "--tail", "1", "-o", "json"]) == 0
    [record] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (record["plugin"], record["instance"], record["revision"], record["level"]) == ("ops", "abc123", 2, "error")


def test_a_follow_prints_records_written_after_it_started(
    served: Served,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    from sysops.cli.remote import RemoteClient

    served.services.logs.write(WRITER, "info", "old", {})
    served.services.logs.write(WRITER, "info", "before", {})
    seen: list[str] = []
    done = threading.Event()

    def follow() -> None:
        from sysops.cli.plugin_cmd import control_client

        client: RemoteClient = control_client()
        for line in client.logs("ops", follow=True, tail=1, structured=True):
            seen.append(json.loads(line)["message"])
            if len(seen) == 3:
                break
        done.set()

    threading.Thread(target=follow, daemon=True).start()
    for message in ("after-1", "after-2"):
        threading.Event().wait(0.3)
        served.services.logs.write(WRITER, "info", message, {})
    assert done.wait(10), seen
    assert seen == ["before", "after-1", "after-2"]  # --tail 1: the last earlier one, then the new ones


def test_an_unknown_plugin_is_not_found(served: Served, capsys: Any) -> None:  # noqa: F811
    assert main(["plugin", "logs", "nosuch", "--structured"]) == ExitCode.NOT_FOUND
    # the last line, after the plaintext warning (the test server has no TLS)
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: no plugin named 'nosuch'")
