"""Plain HTTP is spoken only to a registry on a loopback address (as Docker does), never to a remote host whose
name merely begins like one (`localhost.attacker.example`, `127.attacker.example`): what the server reads there
(the config digest it verifies, the signatures) would travel in clear."""

from __future__ import annotations

import pytest
from sysops.trust.signature_store import INSECURE_ENV, _client


@pytest.mark.parametrize(
    ("host", "scheme"),
    [
        ("127.0.0.1:5000", "http"),
        ("localhost:5000", "http"),
        ("localhost", "http"),
        ("[::1]:5000", "http"),
        ("localhost.attacker.example:5000", "https"),
        ("127.attacker.example", "https"),
        ("127.0.0.1.nip.io:5000", "https"),
        ("registry.example:443", "https"),
    ],
)
def test_only_loopback_registries_are_spoken_to_over_plain_http(
    host: str, scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(INSECURE_ENV, raising=False)
    assert _client(host).prefix == scheme
