"""Per-pod tokens on Kubernetes: derived, not stored, so any server replica knows them without reading Secrets.

A plugin pod's token (what its host calls carry and what the server sends it) is HMAC-SHA256(key, pod
name), hex. The key comes from the file named by SYSOPS_TOKEN_KEY_FILE (the chart mounts its Secret
`<fullname>-keys` there in every server replica), so a restarted server or an HA standby derives the token of
a pod it re-adopts with no `get` on Secrets. A server run outside the chart without that file derives the key
from its own SYSOPS_SERVER_TOKEN (the same token after a restart gives the same pod tokens). The token reaches
the pod only through its Secret `<pod>-token` (see driver.py), never as a plain value in the pod spec.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from pathlib import Path

from sysops.errors import RuntimeOperationError

KEY_FILE_ENV = "SYSOPS_TOKEN_KEY_FILE"
SERVER_TOKEN_ENV = "SYSOPS_SERVER_TOKEN"
#: Shortest key accepted from the key file (bytes, surrounding whitespace removed: see `_key_of_file_content`).
MIN_KEY_BYTES = 32
#: Domain label of the key derived from the server token (it is never used as a key itself).
_SERVER_TOKEN_LABEL = b"sysops pod token key v1"


def token_secret_name(pod: str) -> str:
    """The Secret that holds a pod's token (key `token`; `ca.crt` too when the server speaks TLS)."""
    return f"{pod}-token"


def pod_token(key: bytes, pod: str) -> str:
    """The token of pod `pod`: HMAC-SHA256(key, pod name), as 64 hex digits."""
    return hmac.new(key, pod.encode(), hashlib.sha256).hexdigest()


def token_key() -> bytes:
    """The key pod tokens are derived with: SYSOPS_TOKEN_KEY_FILE's content, else one derived from
    SYSOPS_SERVER_TOKEN; RuntimeOperationError naming what is missing, never the key."""
    return _token_key(os.environ.get(KEY_FILE_ENV, "").strip(), os.environ.get(SERVER_TOKEN_ENV, ""))


@functools.lru_cache(maxsize=4)
def _token_key(key_file: str, server_token: str) -> bytes:
    if key_file:
        try:
            key = _key_of_file_content(Path(key_file).read_bytes())
        except OSError as exc:
            raise RuntimeOperationError(
                f"cannot read the pod token key {key_file} ({KEY_FILE_ENV}): {exc.strerror or exc}"
            ) from None
        if len(key) < MIN_KEY_BYTES:
            raise RuntimeOperationError(
                f"the pod token key {key_file} ({KEY_FILE_ENV}) has {len(key)} bytes; it needs at least {MIN_KEY_BYTES}"
            )
        return key
    if server_token:
        return hmac.new(server_token.encode(), _SERVER_TOKEN_LABEL, hashlib.sha256).digest()
    raise RuntimeOperationError(
        f"no key for plugin pod tokens: set {KEY_FILE_ENV} to a file of at least {MIN_KEY_BYTES} random bytes"
    )


def _key_of_file_content(content: bytes) -> bytes:
    """The key without its surrounding whitespace (the newline an editor or `echo` ends a text key with), as
    sysops always read it, unless that leaves it too short while the content is not printable ASCII text: a
    binary key of 32 random bytes starts or ends with a whitespace byte about one time in 20, and is then used
    whole. (A key that was accepted before keeps its value: pods' tokens do not change on an upgrade.)"""
    stripped = content.strip()
    if len(stripped) >= MIN_KEY_BYTES or all(0x20 <= byte < 0x7F for byte in stripped):
        return stripped
    return content
