"""Test certificates made with the openssl command: a CA, a server certificate it signs (for localhost,
127.0.0.1 and sysops.ns.svc), and an unrelated CA. Shared by the TLS unit tests (CLI and SDK)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SERVER_NAMES = "DNS:localhost,DNS:sysops.ns.svc,IP:127.0.0.1"
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(directory: Path) -> Path:
    """ca.crt signs server.crt (server.key); other-ca.crt is an unrelated CA. Returns `directory`."""
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
                 "-days", "1", "-subj", f"/CN={ca}", cwd=directory)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=sysops", cwd=directory)  # fmt: skip
    (directory / "san.ext").write_text(f"subjectAltName={SERVER_NAMES}\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "1", "-extfile", "san.ext", cwd=directory)  # fmt: skip
    return directory
