"""The host's routed calls to plugin instances on asyncio: grpc.aio channels kept open, one per endpoint.

The call socket (host/call_server.py) serves every routed command on one event loop thread. A threaded gRPC
client there cost a handoff between threads at each event of each call (the channel's polling thread wakes
the caller), and those handoffs, with the call socket's threads, were where the host spent its single
interpreter under concurrent calls. Here a call's events are handled on the loop that asked for them.

Same Invoke, same metadata (the token goes to a socket only after it is checked to be the plugin's), same
errors as core/client.py's PluginClient.invoke (`invoke_error`): a caller's cancellation (its client hung up)
cancels the call in the plugin. Channels are made and used on the loop only (grpc.aio objects are not
thread-safe); as in core/client_pool.py, a channel that is forgotten is not closed under a call still
streaming through it, but when the last call using it lets it go.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import grpc
import grpc.aio
from sysops_sdk.protocol.v1 import plugin_pb2 as pb
from sysops_sdk.protocol.v1 import plugin_pb2_grpc as pb_grpc
from sysops_sdk.wire import Reassembler

from sysops.core.client import (
    CHANNEL_OPTIONS,
    InvocationResult,
    call_metadata,
    ended_without_result,
    invoke_error,
    invoke_request,
    next_item,
    token_metadata,
)
from sysops.core.client_pool import ClientPool


class AioPluginClient:
    """A channel to one plugin instance, used on the event loop that made it."""

    def __init__(self, endpoint: str, plugin: str, token: str) -> None:
        self.endpoint = endpoint
        self.plugin = plugin
        self._metadata = token_metadata(token)
        self.channel = grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
        self._stub = pb_grpc.PluginServiceStub(self.channel)  # type: ignore[no-untyped-call]

    async def invoke(
        self,
        command: str,
        arguments: dict[str, Any],
        output_format: str,
        timeout: float,
        caller: pb.CallerIdentity | None,
    ) -> AsyncGenerator[str | InvocationResult, None]:
        """Run a command: yield its streamed lines, then its InvocationResult (PluginClient.invoke's contract)."""
        metadata = call_metadata(self.endpoint, self.plugin, self._metadata)
        call = self._stub.Invoke(
            invoke_request(command, arguments, output_format, caller), timeout=timeout, metadata=metadata
        )
        pieces = Reassembler()
        received = finished = False
        try:
            async for event in call:
                received = True
                item = next_item(pieces, event, self.plugin)
                if item is None:
                    continue
                yield item
                if isinstance(item, InvocationResult):
                    finished = True
                    return
        except grpc.aio.AioRpcError as exc:
            raise invoke_error(exc, self.plugin, command, timeout, False, received) from exc
        finally:
            if not finished:
                call.cancel()  # the caller stopped (its client hung up) or it failed: stop it in the plugin
        raise ended_without_result(self.plugin, command)


def aio_clients() -> ClientPool[AioPluginClient]:
    """A pool of AioPluginClients, for one event loop."""
    return ClientPool(AioPluginClient)


async def close_all(pool: ClientPool[AioPluginClient]) -> None:
    """Close every channel of `pool` (the server stops: its calls were cancelled)."""
    for client in pool.close():
        await client.channel.close()
