"""Property-based fuzzing of the files users write: manifests (as files and as control-API data), policy files.

The property is always the same: the input is accepted, or refused with a sysops error of one bounded
line (the documented exit code, no traceback); never an internal error, a hang or a crash. Example counts
are bounded (tests/fuzz_properties.py). The control API's requests are fuzzed in test_fuzz_control_api.py,
routed command lines in test_fuzz_cli.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st
from sysops.core.manifest import MANIFEST_FILE, load_manifest, parse_manifest
from sysops.core.policy import load_policy
from sysops.core.safe_yaml import MAX_NODES
from sysops.errors import ExitCode, ManifestError, PolicyDeniedError

from tests.fuzz_properties import assert_exit_code, assert_one_line, fuzz_settings

FUZZ = fuzz_settings(150)
VALID = {"name": "demo", "version": "1.2.3", "entrypoint": "demo.plugin:Demo"}
KEYS = [
    "name", "version", "description", "entrypoint", "types", "requires", "conflicts", "compatibility", "permissions",
    "limits", "network", "readiness", "replicas", "cpu_percent", "memory_mb", "disk_io_mb_per_sec", "pids",
    "network_connections", "host", "ports", "timeout_seconds", "command", "arguments", "sysops", "python", "<<",
]  # fmt: skip
YAML_TOKENS = [
    "&a ", "*a", "&b ", "*b", "[", "]", "{", "}", ", ", ": ", "- ", "\n", "\n  ", "? ", "!!str ", "!!int ", "!!binary ",
    "!!python/object:os.system ", "'", '"', "#", "|", ">", "---\n", "...\n", ".inf", ".nan", "-.inf", "0x7f.1", "1e400",
    "true", "yes", "~", "null", "2020-13-45", "9" * 5000, "\t", "\x00", "\x1b[2J", "\udcff", "é", "<<: *a", "%YAML 1.1",
    *KEYS,
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=80)
    | st.sampled_from(["0.0.0.0/0", "a..b", "0x7f.1", "127.1", "demo.plugin:Demo\n", "1.0\n", "x" * 1000, "none"])
)
trees = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=40,
)


def _check_load(directory: Path, content: bytes) -> None:
    (directory / MANIFEST_FILE).write_bytes(content)
    try:
        load_manifest(directory)
    except ManifestError as error:
        assert_exit_code(error.exit_code, {ExitCode.INVALID_PLUGIN})
        assert_one_line(str(error))


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-plugin")


@FUZZ
@given(change=st.dictionaries(st.sampled_from(KEYS), trees, max_size=4))
def test_valid_manifest_with_hostile_values(plugin_dir: Path, change: dict[str, Any]) -> None:
    """A valid manifest with some keys replaced by random trees, dumped as YAML."""
    _check_load(plugin_dir, yaml.safe_dump({**VALID, **change}, allow_unicode=True).encode("utf-8", "surrogatepass"))


@FUZZ
@given(tokens=st.lists(st.sampled_from(YAML_TOKENS) | st.text(max_size=5), max_size=60))
def test_hostile_yaml_text(plugin_dir: Path, tokens: list[str]) -> None:
    """Random sequences of YAML syntax: anchors, aliases, tags, brackets, big numbers, control characters."""
    text = "name: demo\nversion: 1.2.3\nentrypoint: demo.plugin:Demo\n" + "".join(tokens)
    _check_load(plugin_dir, text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(data=st.binary(max_size=300), encoding=st.sampled_from(["raw", "utf-16", "utf-32", "latin-1"]))
def test_hostile_bytes(plugin_dir: Path, data: bytes, encoding: str) -> None:
    """Binary files and other encodings."""
    content = data if encoding == "raw" else data.decode("latin-1").encode(encoding)
    _check_load(plugin_dir, content)


@fuzz_settings(20)
@given(width=st.integers(2, 12), depth=st.integers(2, 12))
def test_alias_bombs_of_any_shape_are_refused_quickly(plugin_dir: Path, width: int, depth: int) -> None:
    lines = [
        "name: demo",
        "version: 1.2.3",
        "entrypoint: demo.plugin:Demo",
        "readiness:",
        "  arguments:",
        "    l0: &l0 x",
    ]
    for level in range(1, depth + 1):
        lines.append(f"    l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    (plugin_dir / MANIFEST_FILE).write_text("\n".join(lines))
    started = time.monotonic()
    try:
        load_manifest(plugin_dir)
        assert width**depth <= MAX_NODES, "a bomb expanding beyond the node budget was accepted"
    except ManifestError as error:
        assert_one_line(str(error))
    assert time.monotonic() - started < 2


@FUZZ
@given(data=trees)
def test_manifest_data_from_the_control_api(data: Any) -> None:
    """`Up` hands JSON-decoded data straight to parse_manifest."""
    try:
        parse_manifest({**VALID, "readiness": {"arguments": {"x": data}}} if isinstance(data, list) else data, "p")
    except ManifestError as error:
        assert_exit_code(error.exit_code, {ExitCode.INVALID_PLUGIN})
        assert_one_line(str(error))


@fuzz_settings(60)
@given(policy=st.dictionaries(st.sampled_from(["defaults", "caps", "egress", "x"]), trees, max_size=3))
@example(policy={"defaults": {"\n\x1b[2J": None}})  # an unknown key was echoed raw: two lines
def test_hostile_policy_files(tmp_path_factory: pytest.TempPathFactory, policy: dict[str, Any]) -> None:
    home = tmp_path_factory.mktemp("policy-home")
    (home / "policy.yaml").write_bytes(yaml.safe_dump(policy, allow_unicode=True).encode("utf-8", "surrogatepass"))
    try:
        load_policy(home)
    except PolicyDeniedError as error:
        assert_exit_code(error.exit_code, {ExitCode.POLICY_DENIED})
        assert_one_line(str(error))
