"""Property-based fuzzing of the control API (`sysops serve`): every RPC with random fields, in process.

The real ControlServicer behind a real gRPC server, over the fake driver with one plugin rolled so that
`Invoke` reaches a plugin (`Events` is not followed: a follow never ends). Property, for every RPC: the
call succeeds, or fails with a status whose `sysops-exit-code` trailer is in the documented set and whose
message is one line (never UNKNOWN, INTERNAL or a wrapped internal error); a result that `Invoke`
streams carries a documented exit code and a one-line error; and nothing is left behind: no new file
under the server's SYSOPS_HOME but sysops's bookkeeping (tests/fuzz_properties.py), nothing in the
temporary directory, no instance or image more in the driver.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from hypothesis import event, given
from hypothesis import strategies as st
from sysops.core.orchestrator import Orchestrator
from sysops.errors import ExitCode
from sysops.runtime.fake import FakeDriver
from sysops.server.protocol.v1 import control_pb2 as pb
from sysops.server.protocol.v1 import control_pb2_grpc as pb_grpc
from sysops.server.service import EXIT_CODE_METADATA_KEY, ControlServicer
from sysops.settings import Settings
from sysops_sdk.protocol.v1 import plugin_pb2 as plugin_pb

from tests.fuzz_properties import (
    DOCUMENTED_EXIT_CODES,
    assert_exit_code,
    assert_nothing_left,
    assert_one_line,
    files_under,
    fuzz_settings,
)
from tests.unit.test_fuzz_cli import Fuzzed
from tests.unit.test_fuzz_manifest import VALID, trees
from tests.unit.test_rollout import _target

ERRORS = DOCUMENTED_EXIT_CODES - {ExitCode.OK}
#: A failing example of megabytes (hostile on purpose) is reported, not turned into a warning about its size.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


@dataclass
class Served:
    """A control server in process, and what it may leave behind."""

    stub: pb_grpc.ControlStub
    home: Path
    temp: Path
    driver: FakeDriver


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home, temp = tmp_path_factory.mktemp("control-home"), tmp_path_factory.mktemp("control-tmp")
    settings = Settings(home=home, ready_timeout=2.0, drain_timeout=1.0)
    driver = FakeDriver()
    driver.add_image("fuzzed", Fuzzed)
    orchestrator = Orchestrator(settings, driver)
    orchestrator.rollout.roll(_target("fuzzed", name="fuzzed"))
    orchestrator.close()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_ControlServicer_to_server(ControlServicer(settings, driver, None), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with pytest.MonkeyPatch.context() as patch, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        patch.setattr(tempfile, "tempdir", str(temp))  # whatever the server makes with tempfile lands here
        yield Served(pb_grpc.ControlStub(channel), home, temp, driver)
    server.stop(None)
    for handle in list(driver.instances):
        driver.remove(handle)


@pytest.fixture(scope="module")
def control(served: Served) -> pb_grpc.ControlStub:
    return served.stub


# Protobuf strings are UTF-8: lone surrogates cannot be sent at all, so they are left out.
wire_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80) | st.sampled_from(
    ["demo", "/etc/passwd", "../x", "a" * 64, "demo\n", "", "status", "history", "list", "server", "x" * 5000]
)
json_text = (
    st.builds(lambda tree: json.dumps(tree, allow_nan=True), trees)
    | wire_text
    | st.sampled_from(
        ["[" * 100_000, '{"a":' * 50_000, "1" * 5000, json.dumps({**VALID, "limits": {"cpu_percent": True}})]
    )
)
# Arguments of the rolled plugin's commands, with values of any JSON type.
PARAMETERS = ["target", "count", "ratio", "mode", "tag", "dry_run", "first", "second", "key", "x", ""]
invoke_arguments = json_text | st.dictionaries(st.sampled_from(PARAMETERS), trees, max_size=4).map(
    lambda arguments: json.dumps(arguments, allow_nan=True)
)
commands = st.sampled_from(["fz run", "fz sum", "need", "fz", "fuzzed", "fz run x"]) | wire_text


def _check_invoke_event(raw: bytes) -> None:
    """A streamed result says how the command ended with a documented exit code, and a one-line error."""
    event = plugin_pb.InvokeEvent.FromString(raw)
    if event.WhichOneof("event") == "result" and not event.result.continued:
        assert_exit_code(event.result.exit_code, DOCUMENTED_EXIT_CODES)
        assert_one_line(event.result.error)


def _call(stub: pb_grpc.ControlStub, method: str, request: Any) -> int:
    """Make one call; return the exit code it ends with (0, or its error's trailer) after checking the reply."""
    try:
        reply = getattr(stub, method)(request, timeout=30)
        if not isinstance(reply, Message):  # a stream
            for item in reply:
                if isinstance(item, pb.InvokeChunk):
                    _check_invoke_event(item.event)
        return 0
    except grpc.RpcError as error:
        status, details = error.code(), error.details() or ""
        assert status not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (method, details)
        assert "server error" not in details, (method, details)  # an internal error wrapped by the servicer
        assert_one_line(details)
        trailer = dict(error.trailing_metadata() or ()).get(EXIT_CODE_METADATA_KEY)
        assert trailer is not None, (method, status, details)
        assert_exit_code(int(trailer), ERRORS)
        return int(trailer)


@fuzz_settings(100)
@given(
    method=st.sampled_from(["Down", "Rollback", "Query", "Logs", "Up", "Invoke", "Routes", "Events"]),
    name=wire_text,
    text=json_text,
    command=commands,
    arguments=invoke_arguments,
    number=st.integers(min_value=-(2**31), max_value=2**31 - 1),
)
def test_control_api_requests(
    served: Served, method: str, name: str, text: str, command: str, arguments: str, number: int
) -> None:
    kind = (text, "status", "history", "list", "server")[number % 5]
    requests = {
        "Down": lambda: pb.DownRequest(name=name, purge=number % 2 == 0),
        "Rollback": lambda: pb.RollbackRequest(name=name, to=number),
        "Query": lambda: pb.QueryRequest(kind=kind, name=name),
        "Logs": lambda: pb.LogsRequest(name=name, tail=number, follow=number % 7 == 0),
        "Up": lambda: pb.UpRequest(manifest_json=text, image=name, fingerprint=name, source=name),
        "Invoke": lambda: pb.InvokeRequest(command=command, arguments_json=arguments, output_format=name[:10]),
        "Routes": lambda: pb.RoutesRequest(),
        "Events": lambda: pb.EventsRequest(plugin=name if number % 3 else "", after_id=number),  # a follow never ends
    }
    files, instances, images = files_under(served.home), set(served.driver.instances), set(served.driver.images)
    event(f"{method}: exit {_call(served.stub, method, requests[method]())}")
    assert_nothing_left(served.home, files, served.temp)
    assert set(served.driver.instances) <= instances and set(served.driver.images) <= images


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
