import json
from pathlib import Path

import pytest
from sysops.core.manifest import MANIFEST_FILE, json_schema, load_manifest, parse_manifest
from sysops.errors import ExitCode, ManifestError

ROOT = Path(__file__).resolve().parents[2]
VALID = {"name": "demo", "version": "1.2.3", "entrypoint": "demo.plugin:Demo"}


def test_example_manifest_loads() -> None:
    manifest = load_manifest(ROOT / "examples" / "hello")
    assert manifest.name == "hello"
    assert manifest.limits.memory_mb == 128
    assert manifest.network == "none"


def test_defaults_apply_when_keys_are_absent() -> None:
    manifest = parse_manifest(VALID, "plugin.yaml")
    assert manifest.types == ["command"]
    assert manifest.limits.pids == 128
    assert manifest.limits.disk_io_mb_per_sec is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"name": "Bad_Name"}, "key 'name': must be a DNS-1123 label"),
        ({"version": "one"}, "key 'version': 'one' is not a version"),
        ({"entrypoint": "nocolon"}, "key 'entrypoint': must look like 'package.module:PluginClass'"),
        ({"limits": {"memory": 5}}, "unknown key 'limits.memory' (allowed here: cpu_percent, memory_mb"),
        ({"limits": {"memory_mb": 1}}, "key 'limits.memory_mb'"),
        ({"types": ["bogus"]}, "key 'types[0]'"),
        ({"requires": ["Bad Name"]}, "key 'requires'"),
        ({"compatibility": {"sysops": "~~1"}}, "key 'compatibility.sysops'"),
        ({"network": "bridge"}, "key 'network'"),
        ({"network": [{"host": "bad host!"}]}, "key 'network[0].host'"),
        ({"permissions": ["Deploy"]}, "key 'permissions'"),
        ({"colour": "blue"}, "unknown key 'colour'"),
    ],
)
def test_bad_values_name_file_and_key(change: dict[str, object], expected: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest({**VALID, **change}, "x/plugin.yaml")
    assert str(caught.value).startswith("x/plugin.yaml: ")
    assert expected in str(caught.value)
    assert caught.value.exit_code == ExitCode.INVALID_PLUGIN


def test_missing_key_is_named() -> None:
    with pytest.raises(ManifestError, match="missing required key 'entrypoint'"):
        parse_manifest({"name": "a", "version": "1.0"}, "plugin.yaml")


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"plugin\.yaml: file not found"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("name: [unclosed\n")
    with pytest.raises(ManifestError, match=r"plugin.yaml: not valid YAML at line \d"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("- just\n- a list\n")
    with pytest.raises(ManifestError, match="expected a mapping"):
        load_manifest(tmp_path)
    with pytest.raises(ManifestError, match="no such plugin directory"):
        load_manifest(tmp_path / "absent")


def test_exported_schema_is_current() -> None:
    exported = json.loads((ROOT / "manifests" / "plugin.schema.json").read_text())
    assert exported == json_schema(), "run: python -m sysops.core.manifest > manifests/plugin.schema.json"
