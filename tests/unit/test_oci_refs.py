"""Image references by digest (distribution/oci.py): what is accepted, what is refused in one line, and the
registry repository a serving image is pushed to."""

from __future__ import annotations

import pytest
from sysops.distribution.oci import ImageRef, is_oci_ref, parse_ref, registry_repository
from sysops.errors import UsageError

DIGEST = "sha256:" + "ab" * 32


def test_references_with_registry_and_digest_parse() -> None:
    assert parse_ref(f"127.0.0.1:5000/sysops-plugins/x-hello@{DIGEST}") == ImageRef(
        "127.0.0.1:5000/sysops-plugins/x-hello", "", DIGEST
    )
    assert parse_ref(f"oci://reg.example.com/team/hello:1.0.0@{DIGEST}") == ImageRef(
        "reg.example.com/team/hello", "1.0.0", DIGEST
    )
    assert parse_ref(f"localhost/a/b@{DIGEST}").by_digest == f"localhost/a/b@{DIGEST}"
    assert str(parse_ref(f"reg.example.com/a:v1@{DIGEST}")) == f"reg.example.com/a:v1@{DIGEST}"
    assert parse_ref("reg.example.com/a:v1", require_digest=False).tag == "v1"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("reg.example.com/a:v1", "has no digest"),
        (f"hello@{DIGEST}", "not an image reference"),  # no registry host: never Docker Hub by accident
        (f"library/hello@{DIGEST}", "not an image reference"),
        ("reg.example.com/a@sha256:" + "AB" * 32, "not an image reference"),
        ("reg.example.com/a@sha256:abc", "not an image reference"),
        (f"reg.example.com/A@{DIGEST}", "not an image reference"),
        (f"reg.example.com/a b@{DIGEST}", "not an image reference"),
        ("reg.example.com/" + "a/" * 600 + f"b@{DIGEST}", "not an image reference"),
        ("\x1b[31mred", "not an image reference"),
    ],
)
def test_bad_references_are_refused_in_one_line(text: str, words: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse_ref(text)
    assert words in str(refused.value) and "\n" not in str(refused.value)
    assert len(str(refused.value)) < 400


def test_install_specs_that_name_registries() -> None:
    assert is_oci_ref("oci://reg/a:1") and is_oci_ref(f"reg.example.com/a@{DIGEST}")
    assert not is_oci_ref("hello==1.0") and not is_oci_ref("./hello")


def test_the_registry_repository_keeps_installation_and_plugin() -> None:
    assert registry_repository("sysops-plugins/abc-hello:1.0.0-0123", "reg:5000") == "reg:5000/sysops-plugins/abc-hello"
    assert registry_repository("old:5000/sysops-plugins/abc-hello:1.0.0-0123", "new:5000/team/") == (
        "new:5000/team/sysops-plugins/abc-hello"
    )
    with pytest.raises(UsageError):
        registry_repository("evil/x:1", "reg:5000")
