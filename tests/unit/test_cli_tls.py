"""TLS between the CLI and `sysops serve` (server/tls.py, cli/contexts.py, cli/remote.py): a server with a
certificate is verified with the CA and name the user gives, a wrong CA or name is refused with one line and
exit code 5, and plaintext is only ever spoken by explicit choice (`--insecure`, SYSOPS_INSECURE=1).

The certificates come from tests/unit/tls_pki.py (openssl); the server runs in this process over the fake driver.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sysops.cli import contexts
from sysops.cli.main import main
from sysops.errors import ExitCode, UsageError
from sysops.runtime.fake import FakeDriver
from sysops.server.service import ControlServer, serve
from sysops.server.tls import load_server_tls
from sysops.settings import Settings

from tests.unit.tls_pki import make_pki, needs_openssl

TOKEN = "admin-token-0123456789"
pytestmark = needs_openssl


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _serve(settings: Settings, pki: Path | None) -> ControlServer:
    tls = load_server_tls(str(pki / "server.crt"), str(pki / "server.key")) if pki is not None else None
    return serve("127.0.0.1:0", "docker", TOKEN, settings, driver=FakeDriver(), tls=tls)


@pytest.fixture
def client_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for variable in ("SYSOPS_CONTEXT", "SYSOPS_SERVER_CA", "SYSOPS_SERVER_NAME", "SYSOPS_INSECURE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("SYSOPS_CONFIG", str(tmp_path / "cli-config.yaml"))
    monkeypatch.setenv("SYSOPS_TOKEN", TOKEN)
    return monkeypatch


@pytest.fixture
def tls_server(settings: Settings, pki: Path, client_env: pytest.MonkeyPatch) -> Iterator[ControlServer]:
    server = _serve(settings, pki)
    client_env.setenv("SYSOPS_SERVER", f"127.0.0.1:{server.port}")
    yield server
    server.stop(0).wait(5)


def _error_line(capsys: Any) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, lines
    return lines[0]


def test_the_cli_verifies_the_server_with_the_ca(tls_server: ControlServer, pki: Path, client_env: Any) -> None:
    client_env.setenv("SYSOPS_SERVER_CA", str(pki / "ca.crt"))
    assert main(["plugin", "ls"]) == 0
    client_env.setenv("SYSOPS_SERVER_NAME", "sysops.ns.svc")  # a name of the certificate, not the address's
    assert main(["plugin", "ls"]) == 0


def test_a_wrong_ca_is_refused_in_one_line(tls_server: ControlServer, pki: Path, client_env: Any, capsys: Any) -> None:
    client_env.setenv("SYSOPS_SERVER_CA", str(pki / "other-ca.crt"))
    assert main(["plugin", "ls"]) == ExitCode.ENGINE_UNAVAILABLE
    line = _error_line(capsys)
    assert "TLS verification failed, its certificate is not signed by the CA" in line, line
    assert str(pki / "other-ca.crt") in line


def test_a_wrong_name_is_refused(tls_server: ControlServer, pki: Path, client_env: Any, capsys: Any) -> None:
    client_env.setenv("SYSOPS_SERVER_CA", str(pki / "ca.crt"))
    client_env.setenv("SYSOPS_SERVER_NAME", "elsewhere.example")
    assert main(["plugin", "ls"]) == ExitCode.ENGINE_UNAVAILABLE
    assert "its certificate does not name elsewhere.example" in _error_line(capsys)


def test_without_a_ca_the_system_cas_do_not_trust_a_private_one(tls_server: ControlServer, capsys: Any) -> None:
    assert main(["plugin", "ls"]) == ExitCode.ENGINE_UNAVAILABLE
    assert "not signed by the CA (the system's CAs)" in _error_line(capsys)


def test_plaintext_to_a_tls_server_fails(tls_server: ControlServer, client_env: Any, capsys: Any) -> None:
    assert main(["--insecure", "plugin", "ls"]) == ExitCode.ENGINE_UNAVAILABLE
    assert "a server with TLS refuses plaintext: drop --insecure" in _error_line(capsys)


def test_plaintext_only_by_explicit_choice(settings: Settings, client_env: Any, capsys: Any) -> None:
    server = _serve(settings, None)
    try:
        client_env.setenv("SYSOPS_SERVER", f"127.0.0.1:{server.port}")
        assert main(["plugin", "ls"]) == ExitCode.ENGINE_UNAVAILABLE
        assert "TLS verification failed, it does not speak TLS" in _error_line(capsys)
        assert main(["--insecure", "plugin", "ls"]) == 0
        client_env.setenv("SYSOPS_INSECURE", "1")
        assert main(["plugin", "ls"]) == 0
    finally:
        server.stop(0).wait(5)


def test_context_set_keeps_the_ca_name_and_insecure(pki: Path, client_env: Any, tmp_path: Path) -> None:
    client_env.delenv("SYSOPS_SERVER", raising=False)
    assert main(["context", "set", "prod", "--server", "10.0.0.1:7443", "--token", TOKEN, "--ca",
                 str(pki / "ca.crt"), "--server-name", "sysops.ns.svc"]) == 0  # fmt: skip
    assert main(["context", "set", "lab", "--server", "10.0.0.2:7443", "--token", TOKEN, "--insecure"]) == 0
    stored = yaml.safe_load((tmp_path / "cli-config.yaml").read_text())["contexts"]
    assert stored["prod"] == {
        "server": "10.0.0.1:7443", "token": TOKEN, "ca": str(pki / "ca.crt"), "server-name": "sysops.ns.svc"
    }  # fmt: skip
    assert stored["lab"]["insecure"] is True and "ca" not in stored["lab"]
    contexts.use_context("prod")
    prod = contexts.current()
    assert prod is not None and (prod.ca, prod.server_name, prod.insecure) == (
        str(pki / "ca.crt"),
        "sysops.ns.svc",
        False,
    )
    client_env.setenv("SYSOPS_SERVER_NAME", "other.name")
    client_env.setenv("SYSOPS_INSECURE", "1")
    prod = contexts.current()
    assert prod is not None and (prod.server_name, prod.insecure) == ("other.name", True), "the environment wins"
    contexts.use_context("lab")
    client_env.delenv("SYSOPS_INSECURE")
    lab = contexts.current()
    assert lab is not None and lab.insecure


def test_context_set_refuses_a_missing_ca_and_ca_with_insecure(pki: Path, client_env: Any, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--ca .*missing.crt: no such file"):
        contexts.set_context("x", "h:1", TOKEN, ca=str(tmp_path / "missing.crt"))
    with pytest.raises(UsageError, match="--ca and --insecure contradict"):
        contexts.set_context("x", "h:1", TOKEN, ca=str(pki / "ca.crt"), insecure=True)


def test_serve_needs_both_files_and_pem(pki: Path, tmp_path: Path) -> None:
    assert load_server_tls(None, None) is None
    with pytest.raises(UsageError, match=r"--tls-key \(SYSOPS_TLS_KEY\) is not set"):
        load_server_tls(str(pki / "server.crt"), None)
    (tmp_path / "junk").write_text("not a certificate")
    with pytest.raises(UsageError, match=r"--tls-cert .*junk: not a PEM certificate"):
        load_server_tls(str(tmp_path / "junk"), str(pki / "server.key"))
    with pytest.raises(UsageError, match=r"--tls-key .*absent: cannot read it"):
        load_server_tls(str(pki / "server.crt"), str(tmp_path / "absent"))


def test_plaintext_to_a_tcp_server_warns_once_on_stderr(settings: Settings, client_env: Any, capsys: Any) -> None:
    """The token goes to the server in the clear: one warning line per process and server, none for TLS."""
    server = _serve(settings, None)
    try:
        address = f"127.0.0.1:{server.port}"
        client_env.setenv("SYSOPS_SERVER", address)
        assert main(["--insecure", "plugin", "ls"]) == 0
        assert main(["--insecure", "plugin", "ls"]) == 0
        warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
        assert warnings == [
            f"warning: talking plaintext (no TLS, --insecure) to {address}: the token is sent in the clear"
        ]
    finally:
        server.stop(0).wait(5)


def test_a_ca_in_the_environment_turns_a_stored_insecure_context_back_to_tls(
    pki: Path, client_env: Any, tmp_path: Path
) -> None:
    client_env.delenv("SYSOPS_SERVER", raising=False)
    contexts.set_context("lab", "10.0.0.2:7443", TOKEN, insecure=True)
    contexts.use_context("lab")
    client_env.setenv("SYSOPS_SERVER_CA", str(pki / "ca.crt"))
    lab = contexts.current()
    assert lab is not None and (lab.insecure, lab.ca) == (False, str(pki / "ca.crt"))
    client_env.setenv("SYSOPS_INSECURE", "1")
    lab = contexts.current()
    assert lab is not None and lab.insecure, "--insecure said for this command wins"


def test_context_ls_shows_how_each_context_verifies_tls(pki: Path, client_env: Any, capsys: Any) -> None:
    client_env.delenv("SYSOPS_SERVER", raising=False)
    contexts.set_context("prod", "10.0.0.1:7443", TOKEN, ca=str(pki / "ca.crt"))
    contexts.set_context("lab", "10.0.0.2:7443", TOKEN, insecure=True)
    contexts.set_context("public", "sysops.example:7443", TOKEN)
    capsys.readouterr()
    assert main(["context", "ls", "-o", "json"]) == 0
    rows = {row["name"]: row["tls"] for row in json.loads(capsys.readouterr().out)}
    assert rows == {
        "local": "-",
        "prod": f"ca {pki / 'ca.crt'}",
        "lab": "insecure (plaintext)",
        "public": "system CAs",
    }
