"""index.json parsing (distribution/index_client.py): what an index may list, and documents written to hurt.

A document is signed by the index, yet still untrusted text: anything malformed is refused whole with one
line naming the plugin, and the tier always comes from the operator's configuration, never the document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sysops.distribution.index_client import IndexEntry, parse_index_document
from sysops.distribution.index_registry import IndexConfig

INDEX = IndexConfig(name="main", url="https://index.example", tier="community")
DIGEST = "sha256:" + "0f" * 32


def _document(*versions: dict[str, Any], name: str = "hello", **plugin: Any) -> bytes:
    entry = {"name": name, "description": "Says hello", "versions": list(versions), **plugin}
    return json.dumps({"format": 1, "plugins": [entry]}).encode()


def test_a_valid_document_gives_entries_oldest_first_with_the_index_tier() -> None:
    entries = parse_index_document(
        _document(
            {"version": "1.10.0", "spec": "hello-plugin==1.10.0", "image_digest": DIGEST, "tier": "official"},
            {"version": "1.9.0", "spec": "hello @ git+https://git.example/hello@v1.9.0", "stage": "deprecated"},
            {"version": "2.0.0", "spec": "oci://registry.example:5000/p/hello@sha256:" + "1a" * 32},
        ),
        INDEX,
    )
    assert [entry.version for entry in entries] == ["1.9.0", "1.10.0", "2.0.0"]
    newest = entries[-1]
    assert newest == IndexEntry(
        index="main", tier="community", name="hello", version="2.0.0", spec=newest.spec, description="Says hello"
    )
    assert newest.is_oci and not entries[0].is_oci
    assert entries[1].tier == "community"  # "official" in the document does not raise it
    assert entries[0].stage == "deprecated" and entries[1].image_digest == DIGEST


def test_compatibility_ranges_decide_whether_an_entry_fits_this_sysops() -> None:
    fits, too_new = parse_index_document(
        _document(
            {"version": "1.0.0", "spec": "a==1.0.0", "compatibility": {"sysops": ">=0.1,<1.0", "python": ">=3.11"}},
            {"version": "2.0.0", "spec": "a==2.0.0", "compatibility": {"sysops": ">=5"}},
        ),
        INDEX,
    )
    assert fits.fits_this_sysops() and not too_new.fits_this_sysops()


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[]", "format 1"),
        (json.dumps({"format": 2, "plugins": []}).encode(), "format 1"),
        (json.dumps({"format": 1, "plugins": {}}).encode(), "'plugins' must be a list"),
        (json.dumps({"format": 1, "plugins": ["hello"]}).encode(), "each plugin must be an object"),
        (_document({"version": "1.0.0", "spec": "a==1"}, name="Bad_Name"), "not a DNS-1123 label"),
        (_document({"version": "1.0.0", "spec": "a==1"}, name="x" * 64), "not a DNS-1123 label"),
        (_document(), "'versions' must be a non-empty list"),
        (_document({"version": "one", "spec": "a==1"}), "is not a valid version"),
        (_document({"version": "1.0.0", "spec": "a==1"}, {"version": "1.0", "spec": "a==1"}), "listed twice"),
        (_document({"version": "1.0.0"}), "'spec' must be a non-empty string"),
        (_document({"version": "1.0.0", "spec": "rm -rf /; echo"}), "neither a pip requirement nor an OCI ref"),
        (_document({"version": "1.0.0", "spec": "registry/x@sha256:short"}), "neither a pip requirement"),
        (_document({"version": "1.0.0", "spec": "a==1", "image_digest": "md5:00"}), "image_digest must be"),
        (_document({"version": "1.0.0", "spec": "a==1", "stage": "beta"}), "stage 'beta' is not one of"),
        (_document({"version": "1.0.0", "spec": "a==1", "compatibility": {"os": "linux"}}), "compatibility key"),
        (_document({"version": "1.0.0", "spec": "a==1", "compatibility": {"sysops": "soon"}}), "not a version range"),
        (_document({"version": "1.0.0", "spec": "a==1", "description": "ok\x1b]52;c;x\x07"}), "control characters"),
        (_document({"version": "1.0.0", "spec": "a==1"}, description="evil \u202egnp.exe"), "control characters"),
        (_document({"version": "1.0.0", "spec": "a==1"}, description="C1 CSI \x9b2J"), "control characters"),
        (_document({"version": "1.0.0", "spec": "a==1"}, description="line\u2028break"), "control characters"),
        (_document({"version": "1.0.0", "spec": "a==1"}, description=7), "'description' must be a string"),
    ],
)
def test_a_malformed_document_is_refused_in_one_line(data: bytes, complaint: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_index_document(data, INDEX)
    message = str(caught.value)
    assert complaint in message and "\n" not in message


def test_a_duplicate_plugin_is_refused() -> None:
    plugin = {"name": "hello", "versions": [{"version": "1.0.0", "spec": "a==1"}]}
    with pytest.raises(ValueError, match="listed twice"):
        parse_index_document(json.dumps({"format": 1, "plugins": [plugin, plugin]}).encode(), INDEX)


def test_a_deeply_nested_document_is_refused_not_crashed() -> None:
    with pytest.raises(ValueError, match="not UTF-8 JSON"):
        parse_index_document(b"[" * 100_000 + b"]" * 100_000, INDEX)


@pytest.mark.parametrize("damage", [b"garbage", b"{}", b'{"signed": {"_type": "targets"}, "signatures": []}'])
def test_a_damaged_trusted_root_is_named_with_what_to_do(tmp_path: Path, damage: bytes) -> None:
    from sysops.distribution.index_client import index_entries
    from sysops.distribution.index_registry import index_dir
    from sysops.errors import SysopsError

    index = IndexConfig(name="main", url="http://127.0.0.1:1", tier="community")
    index_dir(tmp_path, "main").mkdir(parents=True)
    (index_dir(tmp_path, "main") / "trusted-root.json").write_bytes(damage)
    with pytest.raises(SysopsError) as caught:
        index_entries(tmp_path, index)
    message = str(caught.value)
    assert "trusted-root.json is not TUF root metadata" in message and "sysops index remove main" in message
