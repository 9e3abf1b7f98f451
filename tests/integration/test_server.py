"""`sysops serve` with the Docker runtime: the CLI drives a server through the authenticated control API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.integration.conftest import SYSOPS, Sysops, remove_installation

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "integration-test-token-0123456789"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """A `sysops serve` subprocess with its own state directory."""

    def __init__(self, home: Path, port: int) -> None:
        self.home, self.port = home, port
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = {**os.environ, "SYSOPS_HOME": str(self.home), "SYSOPS_SERVER_TOKEN": TOKEN}
        self.process = subprocess.Popen(
            [SYSOPS, "serve", "--runtime", "docker", "--listen", f"127.0.0.1:{self.port}"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        assert "control API on" in self.process.stderr.readline()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)


@pytest.fixture
def server(engine: docker.DockerClient, tmp_path: Path) -> Iterator[tuple[Server, Sysops]]:
    server = Server(tmp_path / "server-home", _free_port())
    server.start()
    client_home = tmp_path / "client-home"
    env = {
        **os.environ,
        "SYSOPS_HOME": str(client_home),
        "SYSOPS_SERVER": f"127.0.0.1:{server.port}",
        "SYSOPS_TOKEN": TOKEN,
        "SYSOPS_INSECURE": "1",  # the test server is plaintext
    }
    try:
        yield server, Sysops(home=client_home, env=env)
    finally:
        server.stop()
        installation = Sysops(home=server.home, env={}).installation_id
        remove_installation(engine, installation)
        for image in engine.images.list(name=f"sysops-plugins/{installation}-hello"):
            for tag in image.tags:  # untag only: another installation may have built the same content
                if tag.startswith(f"sysops-plugins/{installation}-hello:"):
                    engine.images.remove(tag)


def test_cli_drives_a_server(server: tuple[Server, Sysops], engine: docker.DockerClient) -> None:
    service, cli = server
    up = cli.run("plugin", "up", str(ROOT / "examples" / "hello"))
    assert up.returncode == 0, up.stderr
    installation = Sysops(home=service.home, env={}).installation_id
    assert f"building image sysops-plugins/{installation}-hello:1.0.0-" in up.stderr
    assert "waiting for hello" in up.stderr
    assert cli.ok("greet", "World", "--shout") == "HELLO, WORLD!\n"
    assert json.loads(cli.ok("info", "--output", "json"))["plugin"] == "hello"
    assert cli.ok("count", "--to", "2").split() == ["1", "2"]
    failed = cli.run("fail", "boom")
    assert failed.returncode == 1 and failed.stderr.endswith("\nerror: hello: fail: boom\n")
    assert failed.stderr.startswith("warning: talking plaintext (no TLS, --insecure) to 127.0.0.1:")  # SYSOPS_INSECURE
    unknown = cli.run("gret")
    assert unknown.returncode == 2 and "did you mean 'greet'" in unknown.stderr
    [listed] = json.loads(cli.ok("plugin", "ls", "--output", "json"))
    assert (listed["name"], listed["state"], listed["health"]) == ("hello", "Active", "SERVING")
    assert json.loads(cli.ok("plugin", "history", "hello", "--output", "json"))[0]["revision"] == 1
    assert "serving on" in cli.ok("plugin", "logs", "hello")
    missing = cli.run("plugin", "status", "nope")
    assert missing.returncode == 8 and "\nerror: no plugin named 'nope'" in missing.stderr  # after the warning
    # the server keeps the state: a restarted server still serves and lists the plugin
    service.stop()
    service.start()
    assert cli.ok("greet", "again") == "Hello, again!\n"
    cli.ok("plugin", "down", "hello")
    assert json.loads(cli.ok("plugin", "ls", "--output", "json")) == []


def test_wrong_token_and_unreachable_server_are_clear(server: tuple[Server, Sysops]) -> None:
    _, cli = server
    wrong = cli.run("plugin", "ls", env={"SYSOPS_TOKEN": "not-the-token"})
    assert wrong.returncode == 5 and "refused the token" in wrong.stderr and "Traceback" not in wrong.stderr
    gone = cli.run("plugin", "ls", env={"SYSOPS_SERVER": f"127.0.0.1:{_free_port()}"})
    assert gone.returncode == 5 and "not reachable" in gone.stderr


def test_serve_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    env = {**os.environ, "SYSOPS_HOME": str(tmp_path)}
    env.pop("SYSOPS_SERVER_TOKEN", None)
    result = subprocess.run([SYSOPS, "serve"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "SYSOPS_SERVER_TOKEN must be set" in result.stderr


def test_contexts_select_the_server(tmp_path: Path) -> None:
    env = {**os.environ, "SYSOPS_CONFIG": str(tmp_path / "config.yaml"), "SYSOPS_HOME": str(tmp_path / "home")}
    env.pop("SYSOPS_SERVER", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SYSOPS, *args], env=env, capture_output=True, text=True, timeout=30)

    assert run("context", "set", "far", "--server", f"127.0.0.1:{_free_port()}", "--token", "t" * 20).returncode == 0
    assert run("context", "use", "far").returncode == 0
    rows = json.loads(run("context", "ls", "--output", "json").stdout)
    assert [(r["name"], r["current"]) for r in rows] == [("local", ""), ("far", "*")]
    assert (tmp_path / "config.yaml").stat().st_mode & 0o077 == 0
    unreachable = run("plugin", "ls")
    assert unreachable.returncode == 5 and "not reachable" in unreachable.stderr
    assert run("context", "use", "local").returncode == 0
    assert run("plugin", "ls").returncode == 0
    assert run("context", "use", "nowhere").returncode == 8
    time.sleep(0)
