"""Issue 8 items whose tests were missing (see the survey of items to tests), on the real engine.

- 22: an instance an `up` killed before its switch left running is adopted only if it passes the self-test too
  (not only the limit read-back), and an adopted one gets its history row.
- 11: after a failed roll that asked other limits and replicas, `plugin status` reads back against the manifest
  that still serves.
- 19, 5, 8 through `sysops serve`: large results arrive whole or fail with the capped one-line error, plugin text
  reaches the terminal escaped, and malformed JSON in `Up` and `Invoke` is refused with its exit code, in one
  line, and `Invoke`'s refusal is logged by the server.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import grpc
import pytest
from sysops.server.protocol.v1 import control_pb2 as pb
from sysops.server.protocol.v1 import control_pb2_grpc as pb_grpc

from tests.integration.conftest import (
    SYSOPS,
    Sysops,
    installation_containers,
    plugin_code,
    remove_installation,
    unmount_installation,
    wait_for,
    write_plugin,
)
from tests.integration.test_hardening_callpath import RAW_CONTROLS, on_terminal
from tests.integration.test_server import TOKEN, Server, _free_port

pytestmark = pytest.mark.integration
HOSTILE = Path(__file__).parent / "plugins" / "hostile"
_MIB = 1 << 20
METADATA = (("authorization", f"Bearer {TOKEN}"),)

#: A plugin whose readiness self-test passes until `selftest-break` leaves a marker on its /data.
SELFTEST_CODE = """
from pathlib import Path

from sysops_sdk import Plugin, plugin_command

_BROKEN = Path("/data/selftest-broken")


class P(Plugin):
    name = "selftest"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("selftest-check")
    def check(self) -> str:
        if _BROKEN.exists():
            raise RuntimeError("broken on purpose")
        return "ok"

    @plugin_command("selftest-break")
    def breaks(self) -> str:
        _BROKEN.write_text("broken")
        return "broken"
"""


def selftest_plugin(directory: Path, *, version: str = "1.0.0", memory_mb: int = 128, replicas: int = 1) -> Path:
    """Write (or rewrite) the self-test plugin with its readiness command declared."""
    package = directory / "selftest_plugin"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(SELFTEST_CODE)
    (directory / "plugin.yaml").write_text(
        f"name: selftest\nversion: {version}\nentrypoint: selftest_plugin.plugin:P\n"
        f"limits: {{memory_mb: {memory_mb}}}\nreplicas: {replicas}\nreadiness: {{command: selftest-check}}\n"
    )
    return directory


def status(sysops: Sysops, name: str) -> dict[str, object]:
    result = sysops.run("plugin", "status", name, "--output", "json", timeout=120)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def history(sysops: Sysops, name: str) -> list[int]:
    result = sysops.run("plugin", "history", name, "--output", "json", timeout=60)
    assert result.returncode == 0, result.stderr
    return [row["revision"] for row in json.loads(result.stdout)]


def listed(sysops: Sysops) -> dict[str, dict[str, object]]:
    result = sysops.run("plugin", "ls", "--output", "json", timeout=120)
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


def plugin_containers(engine: docker.DockerClient, sysops: Sysops) -> list[str]:
    """Ids of the installation's plugin containers (not the network holders)."""
    return [c.id for c in installation_containers(engine, sysops.installation_id) if "sysops.role" not in c.labels]


def kill_before_the_switch(sysops: Sysops) -> None:
    """Leave the store as an `up` killed between starting a first instance and switching it in leaves it:
    the plugin's record and the instance's row (not active), no routes, no history row."""
    with sqlite3.connect(sysops.home / "state.db") as db:
        db.execute("UPDATE instances SET active=0")
        db.execute("DELETE FROM routes")
        db.execute("DELETE FROM revisions")


# Item 22: adoption runs the self-test.


def test_a_half_started_instance_whose_self_test_fails_is_discarded_not_adopted(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    fresh_sysops.ok("plugin", "up", str(selftest_plugin(tmp_path / "selftest")))
    [container] = plugin_containers(engine, fresh_sysops)
    assert fresh_sysops.ok("selftest-break") == "broken\n"  # health and limits stay fine; only the self-test fails
    kill_before_the_switch(fresh_sysops)
    plugins = listed(fresh_sysops)
    assert plugins["selftest"]["state"] != "Active", plugins
    assert plugin_containers(engine, fresh_sysops) == []
    discarded = [e["message"] for e in status(fresh_sysops, "selftest")["events"] if e["kind"] == "discarded"]  # type: ignore[attr-defined]
    assert any(container[:12] in m and "self-test 'selftest-check' failed" in m for m in discarded), discarded
    assert history(fresh_sysops, "selftest") == []  # it never served
    routed = fresh_sysops.run("selftest-check")
    assert routed.returncode != 0


def test_a_half_started_instance_that_passes_is_adopted_with_its_history_row(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    fresh_sysops.ok("plugin", "up", str(selftest_plugin(tmp_path / "selftest")))
    [container] = plugin_containers(engine, fresh_sysops)
    kill_before_the_switch(fresh_sysops)
    assert listed(fresh_sysops)["selftest"]["state"] == "Active"
    assert plugin_containers(engine, fresh_sysops) == [container]
    adopted = [e["message"] for e in status(fresh_sysops, "selftest")["events"] if e["kind"] == "adopted"]  # type: ignore[attr-defined]
    assert adopted == [f"verified and adopted running container {container[:12]}"]
    assert history(fresh_sysops, "selftest") == [1]
    assert fresh_sysops.ok("selftest-check") == "ok\n"


# Item 11: a failed roll leaves `status` reading back against the serving manifest.


def test_status_after_a_failed_roll_with_other_limits_reads_back_the_serving_manifest(
    fresh_sysops: Sysops, tmp_path: Path
) -> None:
    plugin_dir = selftest_plugin(tmp_path / "selftest", memory_mb=128, replicas=1)
    fresh_sysops.ok("plugin", "up", str(plugin_dir))
    fresh_sysops.ok("selftest-break")  # the next instance fails its self-test; the serving one was checked already
    selftest_plugin(plugin_dir, version="1.0.1", memory_mb=192, replicas=2)
    rolled = fresh_sysops.run("plugin", "up", str(plugin_dir), timeout=180)
    assert rolled.returncode == 6, rolled.stderr
    assert "self-test 'selftest-check' failed" in rolled.stderr
    report = status(fresh_sysops, "selftest")
    assert (report["version"], report["replicas"], report["state"]) == ("1.0.0", "1/1", "Active")
    limits = report["limits"]
    assert limits["mismatches"] == [], limits  # type: ignore[index]
    assert limits["asked"]["memory_mb"] == 128 and limits["applied"]["memory_mb"] == 128, limits  # type: ignore[index]
    text = fresh_sysops.ok("plugin", "status", "selftest")
    assert "MISMATCH" not in text and "memory_mb 128" in text, text
    assert history(fresh_sysops, "selftest") == [1]


# Items 19, 5 and 8 through `sysops serve`.


class LoggedServer(Server):
    """A `sysops serve` whose log (stderr) goes to a file the test reads."""

    def __init__(self, home: Path, port: int, log: Path) -> None:
        super().__init__(home, port)
        self.log = log

    def start(self) -> None:
        env = {**os.environ, "SYSOPS_HOME": str(self.home), "SYSOPS_SERVER_TOKEN": TOKEN}
        with open(self.log, "a") as sink:
            self.process = subprocess.Popen(
                [SYSOPS, "serve", "--runtime", "docker", "--listen", f"127.0.0.1:{self.port}"],
                env=env,
                stderr=sink,
                text=True,
            )
        wait_for(lambda: "control API on" in self.log.read_text(), 60, "the server to listen")


@dataclass
class Served:
    """A server with the hostile plugin up, and a CLI configured to drive it."""

    server: LoggedServer
    cli: Sysops

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@pytest.fixture(scope="module")
def served(engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("gaps-served")
    server = LoggedServer(root / "server-home", _free_port(), root / "server.log")
    server.start()
    env = {**os.environ, "SYSOPS_HOME": str(root / "client-home"), "SYSOPS_SERVER": f"127.0.0.1:{server.port}"}
    cli = Sysops(home=root / "client-home", env={**env, "SYSOPS_TOKEN": TOKEN, "SYSOPS_INSECURE": "1"})  # plaintext
    served = Served(server, cli)
    try:
        plugin_dir = root / "hostile"
        shutil.copytree(HOSTILE, plugin_dir, ignore=shutil.ignore_patterns("__pycache__"))
        up = cli.run("plugin", "up", str(plugin_dir), timeout=180)
        assert up.returncode == 0, up.stderr
        yield served
    finally:
        server.stop()
        backend = Sysops(home=server.home, env={})
        remove_installation(engine, backend.installation_id)
        unmount_installation(backend)


@pytest.mark.parametrize(("mib", "as_data"), [(5, False), (5, True), (20, False)])
def test_large_results_arrive_whole_through_the_server(served: Served, mib: int, as_data: bool) -> None:
    """Over gRPC's default 4 MiB message; 20 MiB is over the 8 MiB messages both sides allow, so only pieces pass."""
    extra = ["--data", "--output", "json"] if as_data else []
    result = served.cli.run("big", "--mb", str(mib), *extra, timeout=60)
    assert result.returncode == 0, result.stderr[:500]
    text = json.loads(result.stdout)["payload"] if as_data else result.stdout.removesuffix("\n")
    assert len(text) == mib * _MIB
    assert hashlib.sha256(text.encode()).hexdigest() == hashlib.sha256(b"x" * (mib * _MIB)).hexdigest()


def test_a_result_over_the_cap_is_one_clear_line_through_the_server(served: Served) -> None:
    result = served.cli.run("big", "--mb", "70", timeout=60)
    assert (result.returncode, result.stdout) == (1, "")
    warning, error = result.stderr.splitlines()  # the plaintext warning (SYSOPS_INSECURE), then the one error line
    assert warning.startswith("warning: talking plaintext") and error == (
        "error: hostile: big: reply larger than 64 MiB (70.0 MiB): return less, or write it to /data"
    )
    assert served.cli.ok("ping") == "pong\n"


def test_plugin_text_reaches_the_terminal_escaped_through_the_server(served: Served) -> None:
    for args in (("escapes",), ("escapes", "--stream"), ("escapes", "--fail"), ("plugin", "logs", "hostile")):
        code, shown = on_terminal(served.cli, *args)
        assert code == (1 if "--fail" in args else 0), shown
        assert not any(control in shown for control in RAW_CONTROLS), (args, shown)
        assert "\\x1b]52;c;cm0gLXJmIH4=\\x07" in shown, (args, shown)


def _refusal(call: Iterator[object]) -> tuple[grpc.StatusCode, str, str]:
    """Status, exit-code trailer and message of a control-API call that must fail."""
    with pytest.raises(grpc.RpcError) as raised:
        list(call)
    error = raised.value
    trailer = dict(error.trailing_metadata() or ()).get("sysops-exit-code", "")
    return error.code(), str(trailer), str(error.details())


@pytest.fixture
def control(served: Served) -> Iterator[pb_grpc.ControlStub]:
    """A raw control-API stub, to send requests the CLI never would."""
    with grpc.insecure_channel(served.address) as channel:
        yield pb_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]


def test_malformed_json_in_up_is_refused_with_exit_4_in_one_line(served: Served, control: pb_grpc.ControlStub) -> None:
    request = pb.UpRequest(manifest_json="{not json", image="x", fingerprint="f", source="/x")
    code, exit_code, message = _refusal(control.Up(request, metadata=METADATA))
    assert (code, exit_code) == (grpc.StatusCode.INVALID_ARGUMENT, "4"), message  # docs/protocol.md, cli.md
    assert "\n" not in message and message.startswith("the manifest is not valid JSON"), message
    assert "Traceback" not in served.server.log.read_text()


def test_malformed_json_in_invoke_is_refused_with_exit_2_in_one_line_and_logged(
    served: Served, control: pb_grpc.ControlStub
) -> None:
    for arguments in ("{not json", "[1, 2]"):
        request = pb.InvokeRequest(command="ping", arguments_json=arguments)
        code, exit_code, message = _refusal(control.Invoke(request, metadata=METADATA))
        assert (code, exit_code) == (grpc.StatusCode.INVALID_ARGUMENT, "2"), message  # documented: exit 2
        assert "\n" not in message and message.startswith("the command's argument"), message
    logged = served.server.log.read_text()
    assert "WARNING Invoke of 'ping' refused: 'the command's argument object is not valid JSON" in logged, logged
    assert "WARNING Invoke of 'ping' refused: 'the command's arguments are not a JSON object'" in logged, logged
    assert "Traceback" not in logged, logged
    assert served.cli.ok("ping") == "pong\n"  # the server and the plugin are fine


def test_a_plugin_without_a_logs_key_gets_the_default_cap_and_a_policy_lowers_it(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    """Item 20: no `logs:` in the manifest still means rotated, capped json-file logs (10 MiB x 3), and the
    operator's policy lowers that default; the engine's container carries exactly what status reads back."""
    plugin = write_plugin(tmp_path / "quiet", name="quiet", code=plugin_code("quiet"))
    fresh_sysops.ok("plugin", "up", str(plugin))
    (container,) = installation_containers(engine, fresh_sysops.installation_id)
    assert container.attrs["HostConfig"]["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": str(10 * _MIB), "max-file": "3"},
    }
    assert status(fresh_sysops, "quiet")["limits"]["applied"]["logs"] == f"json-file, max-size {10 * _MIB}, max-file 3"  # type: ignore[index]
    fresh_sysops.ok("plugin", "down", "quiet")
    (fresh_sysops.home / "policy.yaml").write_text("caps: {logs_max_mb: 2, logs_files: 2}\n")
    fresh_sysops.ok("plugin", "up", str(plugin))
    (container,) = installation_containers(engine, fresh_sysops.installation_id)
    assert container.attrs["HostConfig"]["LogConfig"]["Config"] == {"max-size": str(2 * _MIB), "max-file": "2"}
