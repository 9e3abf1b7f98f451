"""The call path on the real engine: plugin text cannot drive the terminal, large replies arrive whole or fail
clearly, bad arguments stop before anything is sent, and a roll through `sysops serve` fails no call."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import docker
import pytest
from sysops.cli import contexts
from sysops.cli.remote import RemoteClient
from sysops.core.client import InvocationResult
from sysops.errors import SysopsError

from tests.integration.conftest import (
    SYSOPS,
    Sysops,
    copy_example,
    plugin_code,
    remove_installation,
    wait_for,
    write_plugin,
)
from tests.integration.test_hot_reload import LoadLoop, _set_greeting
from tests.integration.test_server import TOKEN, Server, _free_port

pytestmark = pytest.mark.integration
HOSTILE = Path(__file__).parent / "plugins" / "hostile"
#: What reaches a terminal must hold none of these: ESC, BEL, CR, backspace, C1 CSI, RLO.
RAW_CONTROLS = ("\x1b", "\x07", "\r", "\x08", "\x9b", "\u202e")


@pytest.fixture(scope="module")
def hostile_dir(sysops: Sysops, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("callpath") / "hostile"
    shutil.copytree(HOSTILE, target, ignore=shutil.ignore_patterns("__pycache__"))
    result = sysops.run("plugin", "up", str(target), timeout=180)
    assert result.returncode == 0, result.stderr
    return target


@pytest.fixture(scope="module")
def hostile(sysops: Sysops, hostile_dir: Path) -> Sysops:
    return sysops


def on_terminal(sysops: Sysops, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run sysops with stdout and stderr on a pseudo-terminal; return its exit code and what the terminal got."""
    main, secondary = pty.openpty()
    process = subprocess.Popen([SYSOPS, *args], env={**sysops.env, **(env or {})}, stdout=secondary, stderr=secondary)
    os.close(secondary)
    received = b""
    while True:
        ready, _, _ = select.select([main], [], [], 30)
        if not ready:
            process.kill()
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        received += chunk
    os.close(main)
    return process.wait(timeout=30), received.decode("utf-8", "replace").replace("\r\n", "\n")  # the tty's ONLCR


def test_plugin_text_cannot_drive_the_terminal(hostile: Sysops) -> None:
    for args in (("escapes",), ("escapes", "--stream"), ("escapes", "--fail"), ("plugin", "logs", "hostile")):
        code, shown = on_terminal(hostile, *args)
        assert code == (1 if "--fail" in args else 0), shown
        assert not any(control in shown for control in RAW_CONTROLS), (args, shown)
        assert "\\x1b]52;c;cm0gLXJmIH4=\\x07" in shown, (args, shown)
        assert "--fail" in args or "\\u202eexe.txt" in shown, (args, shown)  # an error is its first line: up to CR


def test_raw_output_is_the_users_choice_and_pipes_get_the_bytes(hostile: Sysops) -> None:
    code, shown = on_terminal(hostile, "escapes", env={"SYSOPS_RAW_OUTPUT": "1"})
    assert code == 0 and "\x1b]52;c;" in shown
    piped = hostile.run("escapes")
    assert piped.returncode == 0 and piped.stdout.startswith("result \x1b]52;c;cm0gLXJmIH4=\x07")
    failed = hostile.run("escapes", "--fail", env={"SYSOPS_RAW_OUTPUT": "1"})  # errors are escaped always
    assert failed.returncode == 1 and "\x1b" not in failed.stderr and "boom \\x1b]52" in failed.stderr


@pytest.mark.parametrize(("mib", "as_data"), [(5, False), (5, True), (60, False)])
def test_results_up_to_the_cap_arrive_whole(hostile: Sysops, mib: int, as_data: bool) -> None:
    """5 MiB was over gRPC's default 4 MiB message limit; 60 MiB fits the plugin's default 256 MiB of memory."""
    result = hostile.run("big", "--mb", str(mib), *(["--data", "--output", "json"] if as_data else []), timeout=60)
    assert result.returncode == 0, result.stderr[:500]
    assert result.stdout.count("x") == mib << 20


def test_a_70_mib_result_is_a_clear_error(hostile: Sysops) -> None:
    result = hostile.run("big", "--mb", "70", timeout=60)
    assert result.returncode == 1
    assert result.stderr == (
        "error: hostile: big: reply larger than 64 MiB (70.0 MiB): return less, or write it to /data\n"
    )
    assert hostile.ok("ping") == "pong\n"  # the plugin is fine


def test_bad_arguments_stop_before_anything_is_sent(hostile: Sysops) -> None:
    env = {**hostile.env}
    done = subprocess.run([SYSOPS, "udp", b"caf\xe9", "1"], env=env, capture_output=True, timeout=30, check=False)
    assert done.returncode == 2
    assert done.stderr.decode() == (
        "error: udp: argument 'host' is not valid UTF-8; pass text in UTF-8 (check the terminal's or file's encoding)\n"
    )
    many = hostile.run("ping", *(["x"] * 10_000))
    assert many.returncode == 2 and len(many.stderr) < 1000 and "more characters" in many.stderr


def test_calls_in_flight_during_a_roll_finish_before_cleanup_and_none_fails(hostile: Sysops, hostile_dir: Path) -> None:
    """Slow calls keep the old instance busy while it is quiesced and drained; new calls are re-sent to the new one."""
    answers: list[tuple[int, str, str]] = []

    def caller() -> None:
        for _ in range(4):
            done = hostile.run("slow", "--seconds", "0.7", timeout=60)
            answers.append((done.returncode, done.stdout, done.stderr))

    callers = [threading.Thread(target=caller) for _ in range(3)]
    for thread in callers:
        thread.start()
    time.sleep(1.0)
    manifest = hostile_dir / "plugin.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: 1.0.1"))
    rolled = hostile.run("plugin", "up", str(hostile_dir), timeout=180)
    for thread in callers:
        thread.join(120)
    assert rolled.returncode == 0, rolled.stderr
    assert answers == [(0, "done\n", "")] * 12  # none failed, none ran after cleanup()


def test_up_failure_details_are_escaped(fresh_sysops: Sysops, tmp_path: Path) -> None:
    attack = "\\x1b]52;c;cm0gLXJmIH4=\\x07\\x1b]0;pwned\\x07\\r\\u202e"
    initialize = f"print('{attack}', file=__import__('sys').stderr, flush=True); raise RuntimeError('{attack}')"
    plugin_dir = write_plugin(tmp_path / "evil", name="evil", code=plugin_code("evil", initialize=initialize))
    failed = fresh_sysops.run("plugin", "up", str(plugin_dir), timeout=180)
    assert failed.returncode == 6, failed.stderr
    assert not any(control in failed.stderr for control in RAW_CONTROLS), failed.stderr
    assert failed.stderr.count("\\x1b]52;c;cm0gLXJmIH4=") >= 2  # the error line and the log lines below it


@dataclass
class ServerLoad(LoadLoop):
    """LoadLoop's clients calling `greet World` through the control API with the CLI's client, as fast as it answers.

    The server, its token and TLS settings come from the CLI's environment (SYSOPS_SERVER, SYSOPS_TOKEN, ...)."""

    clients: int = 4
    seconds: float = 180
    #: Seconds each client waits between its calls (0: as fast as the server answers).
    pause: float = 0.0

    _context: contexts.ServerContext | None = None

    def __enter__(self) -> ServerLoad:
        with mock.patch.dict(os.environ, self.sysops.env, clear=True):  # before the clients' threads start
            self._context = contexts.current()
        assert self._context is not None, "SYSOPS_SERVER is not set"
        super().__enter__()
        return self

    def _run(self) -> None:
        assert self._context is not None
        client = RemoteClient(self._context)
        deadline = time.monotonic() + self.seconds  # bounded even if the test forgets to stop it
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    *_, result = client.invoke("greet", {"name": "World"}, "text", "hello")
                    assert isinstance(result, InvocationResult)
                    self.answers.append(result.text)
                except SysopsError as error:
                    self.failures.append(str(error))
                self._stop.wait(self.pause)
        finally:
            client.close()


@pytest.fixture
def served(engine: docker.DockerClient, tmp_path: Path) -> Iterator[tuple[Sysops, str]]:
    server = Server(tmp_path / "server-home", _free_port())
    server.start()
    address = f"127.0.0.1:{server.port}"
    env = {**os.environ, "SYSOPS_HOME": str(tmp_path / "client-home"), "SYSOPS_SERVER": address, "SYSOPS_TOKEN": TOKEN}
    env["SYSOPS_INSECURE"] = "1"  # the test server is plaintext
    try:
        yield Sysops(home=tmp_path / "client-home", env=env), address
    finally:
        server.stop()
        remove_installation(engine, Sysops(home=server.home, env={}).installation_id)


def test_a_roll_through_the_server_fails_no_call(served: tuple[Sysops, str], tmp_path: Path) -> None:
    cli, _ = served
    plugin_dir = copy_example("hello", tmp_path)
    up = cli.run("plugin", "up", str(plugin_dir), timeout=180)
    assert up.returncode == 0, up.stderr
    with ServerLoad(cli) as load:
        wait_for(lambda: len(load.answers) >= 10, 30, "the first answers")
        for greeting in ("Howdy", "Ahoy", "Salut"):
            _set_greeting(plugin_dir, greeting)
            rolled = cli.run("plugin", "up", str(plugin_dir), timeout=180)
            assert rolled.returncode == 0, rolled.stderr
            wait_for(lambda greeting=greeting: load.latest().startswith(greeting), 60, f"{greeting!r} to answer")
    assert load.failures == []
    assert {answer.split(",")[0] for answer in load.answers} == {"Hello", "Howdy", "Ahoy", "Salut"}
