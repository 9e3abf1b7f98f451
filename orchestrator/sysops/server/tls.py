"""TLS of `sysops serve`'s TCP port: the certificate and key it presents (`--tls-cert`/`--tls-key`, env
SYSOPS_TLS_CERT/SYSOPS_TLS_KEY; the Helm chart mounts its `<fullname>-tls` Secret there).

One port serves the control API and plugin pods' host calls, so both are encrypted and the server is verified
by whoever calls it: the CLI with the CA it is given (cli/remote.py), plugin pods with the CA of their token
Secret (sdk/sysops_sdk/_host_client.py). The resident host's Unix socket has no TLS (its 0600 mode is the
authentication). Files are read once at start; a missing or malformed one is refused with one line naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from sysops.errors import UsageError

CERT_ENV = "SYSOPS_TLS_CERT"
KEY_ENV = "SYSOPS_TLS_KEY"
_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PEM_PRIVATE_KEY = b"PRIVATE KEY-----"


@dataclass(frozen=True)
class ServerTls:
    """The PEM certificate chain and private key the server presents."""

    certificate: bytes
    private_key: bytes

    def credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials for them (no client certificates: callers authenticate with tokens)."""
        return grpc.ssl_server_credentials([(self.private_key, self.certificate)])


def _read_pem(path: str, option: str, marker: bytes, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot read it ({exc.strerror or exc})") from None
    if marker not in data:
        raise UsageError(f"{option} {path}: not a PEM {what}")
    return data


def load_server_tls(cert_path: str | None, key_path: str | None) -> ServerTls | None:
    """The server's TLS from the two files, or None when neither is given (plaintext); one without the other
    or an unreadable or non-PEM file is a UsageError naming it."""
    if not cert_path and not key_path:
        return None
    if not cert_path or not key_path:
        missing = f"--tls-cert ({CERT_ENV})" if not cert_path else f"--tls-key ({KEY_ENV})"
        raise UsageError(f"TLS needs both --tls-cert and --tls-key: {missing} is not set")
    return ServerTls(
        certificate=_read_pem(cert_path, "--tls-cert", _PEM_CERTIFICATE, "certificate"),
        private_key=_read_pem(key_path, "--tls-key", _PEM_PRIVATE_KEY, "private key"),
    )
