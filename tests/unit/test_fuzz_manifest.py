"""Property-based fuzzing of what users and cluster clients send: manifests, policy files, control API requests.

The property is always the same: the input is accepted, or refused with a sysops error of one bounded
line (the documented exit code, no traceback); never an internal error, a hang or a crash. Example counts
are bounded so the suite stays well under a minute in CI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sysops.core.manifest import MANIFEST_FILE, load_manifest, parse_manifest
from sysops.core.policy import load_policy
from sysops.core.safe_yaml import MAX_NODES
from sysops.errors import ExitCode, ManifestError, PolicyDeniedError
from sysops.runtime.fake import FakeDriver
from sysops.server.protocol.v1 import control_pb2 as pb
from sysops.server.protocol.v1 import control_pb2_grpc as pb_grpc
from sysops.server.service import ControlServicer
from sysops.settings import Settings

MESSAGE_LIMIT = 1000
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
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


def _assert_one_line(error: Exception) -> None:
    message = str(error)
    assert "\n" not in message and "\r" not in message, message
    assert len(message) <= MESSAGE_LIMIT, message[:200]


def _check_load(directory: Path, content: bytes) -> None:
    (directory / MANIFEST_FILE).write_bytes(content)
    try:
        load_manifest(directory)
    except ManifestError as error:
        assert error.exit_code == ExitCode.INVALID_PLUGIN
        _assert_one_line(error)


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


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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
        _assert_one_line(error)
    assert time.monotonic() - started < 2


@FUZZ
@given(data=trees)
def test_manifest_data_from_the_control_api(data: Any) -> None:
    """`Up` hands JSON-decoded data straight to parse_manifest."""
    try:
        parse_manifest({**VALID, "readiness": {"arguments": {"x": data}}} if isinstance(data, list) else data, "p")
    except ManifestError as error:
        _assert_one_line(error)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(policy=st.dictionaries(st.sampled_from(["defaults", "caps", "egress", "x"]), trees, max_size=3))
def test_hostile_policy_files(tmp_path_factory: pytest.TempPathFactory, policy: dict[str, Any]) -> None:
    home = tmp_path_factory.mktemp("policy-home")
    (home / "policy.yaml").write_bytes(yaml.safe_dump(policy, allow_unicode=True).encode("utf-8", "surrogatepass"))
    try:
        load_policy(home)
    except PolicyDeniedError as error:
        _assert_one_line(error)


# The control API, in process: the real servicer over the fake driver, random requests through the stub.
@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pb_grpc.ControlStub]:
    home = tmp_path_factory.mktemp("control-home")
    servicer = ControlServicer(Settings(home=home, ready_timeout=2.0, drain_timeout=1.0), FakeDriver(), None)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_ControlServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.ControlStub(channel)
    server.stop(None)


# Protobuf strings are UTF-8: lone surrogates cannot be sent at all, so they are left out.
wire_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80) | st.sampled_from(
    ["demo", "/etc/passwd", "../x", "a" * 64, "demo\n", "", "status", "history", "list", "x" * 5000]
)
json_text = (
    st.builds(lambda tree: json.dumps(tree, allow_nan=True), trees)
    | wire_text
    | st.sampled_from(
        ["[" * 100_000, '{"a":' * 50_000, "1" * 5000, json.dumps({**VALID, "limits": {"cpu_percent": True}})]
    )
)


def _call(stub: pb_grpc.ControlStub, method: str, request: Any) -> None:
    try:
        reply = getattr(stub, method)(request, timeout=30)
        if not isinstance(reply, pb.QueryReply):
            list(reply)
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""
        assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (method, details)
        assert "server error" not in details, (method, details)  # an internal error wrapped by the servicer
        assert "\n" not in details and len(details) <= MESSAGE_LIMIT, (method, details[:300])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["Down", "Rollback", "Query", "Logs", "Up", "Invoke"]),
    name=wire_text,
    text=json_text,
    number=st.integers(min_value=-(2**31), max_value=2**31 - 1),
)
def test_control_api_requests(control: pb_grpc.ControlStub, method: str, name: str, text: str, number: int) -> None:
    kind = text if number % 3 == 0 else ("status", "history")[number % 2]
    requests = {
        "Down": lambda: pb.DownRequest(name=name, purge=number % 2 == 0),
        "Rollback": lambda: pb.RollbackRequest(name=name, to=number),
        "Query": lambda: pb.QueryRequest(kind=kind, name=name),
        "Logs": lambda: pb.LogsRequest(name=name, tail=number),
        "Up": lambda: pb.UpRequest(manifest_json=text, image=name, fingerprint=name, source=name),
        "Invoke": lambda: pb.InvokeRequest(command=name, arguments_json=text),
    }
    _call(control, method, requests[method]())


@pytest.mark.parametrize("method", ["Down", "Rollback", "Logs", "Query"])
def test_control_api_refuses_a_path_for_a_name(control: pb_grpc.ControlStub, tmp_path: Path, method: str) -> None:
    victim = tmp_path / "poetry.lock"
    victim.write_text("precious\n")
    name = str(tmp_path / "poetry")
    request = {
        "Down": pb.DownRequest(name=name),
        "Rollback": pb.RollbackRequest(name=name),
        "Logs": pb.LogsRequest(name=name),
        "Query": pb.QueryRequest(kind="status", name=name),
    }[method]
    with pytest.raises(grpc.RpcError) as caught:
        reply = getattr(control, method)(request, timeout=30)
        if not isinstance(reply, pb.QueryReply):
            list(reply)
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "invalid plugin name" in error.details()
    assert ("sysops-exit-code", str(int(ExitCode.USAGE))) in tuple(error.trailing_metadata())
    assert victim.read_text() == "precious\n"
