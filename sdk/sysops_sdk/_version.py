"""Versions the orchestrator and plugins compare at connect time."""

SDK_VERSION = "0.1.0"
#: "MAJOR.MINOR" of sysops.plugin.v1. A different MAJOR is refused at connect; MINOR only adds fields.
PROTOCOL_VERSION = "1.4"


def protocol_compatible(other: str) -> bool:
    """Say whether a peer speaking protocol `other` can talk to this one."""
    return other.split(".", 1)[0] == PROTOCOL_VERSION.split(".", 1)[0]
