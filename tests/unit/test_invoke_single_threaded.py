"""Routed throughput (issue 15 item 4): an Invoke is read in the calling thread (gRPC's single-threaded
unary-stream), so a call through the host starts no channel-spin thread, and no call stays referenced."""

from __future__ import annotations

import gc

import grpc._channel
import pytest
from sysops.core.client import InvocationResult, PluginClient
from sysops.core.orchestrator import Orchestrator

from tests.unit.test_rollout import _target


def test_an_invoke_starts_no_spin_thread_and_leaves_no_call_behind(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    orchestrator.rollout.roll(_target("echo-v1"))
    route = orchestrator.store.route("echo")
    assert route is not None
    spins: list[object] = []
    real_spin = grpc._channel._run_channel_spin_thread

    def counting(state: object) -> None:
        spins.append(state)
        real_spin(state)  # type: ignore[arg-type]

    monkeypatch.setattr(grpc._channel, "_run_channel_spin_thread", counting)
    with PluginClient(route.endpoint, "echo", route.token_for(route.endpoint)) as client:
        for index in range(20):
            *_, result = client.invoke("echo", {"text": str(index)})
            assert isinstance(result, InvocationResult) and result.text == f"v1:{index}"
        gc.collect()
        open_calls = [item for item in gc.get_objects() if isinstance(item, grpc._channel._SingleThreadedRendezvous)]
        assert len(open_calls) <= 1, f"calls left referenced: {len(open_calls)} "
    assert spins == [], "no channel-spin thread: the caller's thread reads the stream"
