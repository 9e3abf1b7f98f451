"""The public protocol surface of the SDK: what an orchestrator needs to speak to a plugin server.

Everything here is the wire contract (protocol version, metadata keys, message limits, chunking of large
replies, the plugin server's exit codes, the token check), so that the orchestrator never imports the SDK's
private modules and a change to one of these names is a visible change of the protocol.
"""

from __future__ import annotations

from sysops_sdk._chunks import (
    MAX_MESSAGE_BYTES,
    Reassembler,
    ReplyTooLargeError,
    WholeResult,
    batch_events,
    output_events,
    result_events,
    speaks_batches,
    speaks_chunks,
)
from sysops_sdk._dev_code import CLAIM, CLAIM_FIFO, CLAIMED_FILE, DEV_CODE_ENV, DEV_ROOT
from sysops_sdk._server import (
    AUTHORIZATION_METADATA_KEY,
    EXIT_ENTRYPOINT,
    EXIT_INITIALIZE,
    EXIT_SERVE,
    PROTOCOL_METADATA_KEY,
    SERVICE_NAME,
    TokenAuthInterceptor,
)
from sysops_sdk._service import EXIT_SERVICE, RESTART_ENV, SERVICE_HEALTH, SERVICE_STOPPED_PREFIX
from sysops_sdk._types import TYPES_ENV
from sysops_sdk._version import PROTOCOL_VERSION, SDK_VERSION, protocol_compatible

__all__ = [
    "AUTHORIZATION_METADATA_KEY",
    "CLAIM",
    "CLAIMED_FILE",
    "CLAIM_FIFO",
    "DEV_CODE_ENV",
    "DEV_ROOT",
    "EXIT_ENTRYPOINT",
    "EXIT_INITIALIZE",
    "EXIT_SERVE",
    "EXIT_SERVICE",
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_METADATA_KEY",
    "PROTOCOL_VERSION",
    "RESTART_ENV",
    "SDK_VERSION",
    "SERVICE_HEALTH",
    "SERVICE_NAME",
    "SERVICE_STOPPED_PREFIX",
    "TYPES_ENV",
    "Reassembler",
    "ReplyTooLargeError",
    "TokenAuthInterceptor",
    "WholeResult",
    "batch_events",
    "output_events",
    "protocol_compatible",
    "result_events",
    "speaks_batches",
    "speaks_chunks",
]
