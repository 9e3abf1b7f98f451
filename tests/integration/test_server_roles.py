"""A real `sysops serve` (Docker runtime) with caller roles from its policy and `--metrics-port`: viewers and
operators are refused what their role does not allow before the plugin runs, and a scraper reads /metrics."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import Sysops
from tests.integration.test_server import ROOT, Server, _free_port, server  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration
CALLERS = {"alice": ("alice-viewer-token", "viewer"), "bob": ("bob-operator-token", "operator")}
METRICS_PORT = _free_port()


@pytest.fixture(autouse=True)
def roles_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server (started by test_server's `server` fixture with this environment) reads these callers."""
    callers = [
        {"name": name, "token_sha256": hashlib.sha256(token.encode()).hexdigest(), "role": role}
        for name, (token, role) in CALLERS.items()
    ]
    policy = tmp_path / "policy.yaml"
    policy.write_text(json.dumps({"callers": callers}))
    monkeypatch.setenv("SYSOPS_POLICY", str(policy))
    monkeypatch.setenv("SYSOPS_METRICS_PORT", str(METRICS_PORT))


#: The warning the CLI prints when it talks plaintext to a TCP server.
PLAINTEXT = "warning: talking plaintext"


def _as(cli: Sysops, name: str, *args: str) -> tuple[int, str, str]:
    """Run as caller `name`; stderr without the plaintext warning line (the test server has no TLS)."""
    result = cli.run(*args, env={"SYSOPS_TOKEN": CALLERS[name][0]})
    errors = "".join(line for line in result.stderr.splitlines(keepends=True) if not line.startswith(PLAINTEXT))
    return result.returncode, result.stdout, errors


def test_roles_and_metrics_of_a_real_server(server: tuple[Server, Sysops]) -> None:  # noqa: F811
    _, cli = server
    up = cli.run("plugin", "up", str(ROOT / "examples" / "hello"))
    assert up.returncode == 0, up.stderr
    code, _, err = _as(cli, "alice", "greet", "World")
    assert (code, err) == (
        9,
        "error: caller 'alice' (role viewer) may not run command 'greet'; it needs role operator\n",
    )
    code, out, _ = _as(cli, "alice", "plugin", "ls")
    assert code == 0 and "hello" in out
    code, out, err = _as(cli, "bob", "greet", "World")
    assert (code, out) == (0, "Hello, World!\n"), err
    code, _, err = _as(cli, "bob", "plugin", "down", "hello")
    assert (code, err) == (9, "error: caller 'bob' (role operator) may not run plugin down; it needs role admin\n")
    wrong = cli.run("plugin", "ls", env={"SYSOPS_TOKEN": "nobody-has-this-token"})
    assert wrong.returncode == 5 and "refused the token" in wrong.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10) as reply:
        scraped = reply.read().decode()
    assert 'sysops_calls_total{command="greet",outcome="ok",plugin="hello"} 1.0' in scraped
    code, out, _ = _as(cli, "alice", "metrics", "--plugin", "hello")
    assert code == 0 and 'sysops_calls_total{command="greet",outcome="ok",plugin="hello"} 1.0' in out
    assert cli.run("plugin", "down", "hello").returncode == 0  # the server token is admin
