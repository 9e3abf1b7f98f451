"""Records what the bus delivers: the numbers of `bus-test.*` events (with their delivery latency), the
`sysops.lifecycle` events as 'plugin:kind', and the `sysops.dead-letter` payloads, each as a list in the
host's `state` (appended by compare-and-set, so instances side by side during a roll lose nothing).
A `*.gated` event waits until `NAME-open-gate` ran (the test holds deliveries with it); SLEEP_SECONDS makes
every `bus-test.*` handler slow (the test's stuck subscriber)."""

from __future__ import annotations

import json
import time
from typing import Any

from sysops_sdk import Event, Plugin, argument, on_event, plugin_command

#: The plugin's name (the test rewrites it with the manifest's); its commands are prefixed with it.
NAME = "ears"
#: Which build serves (the test rewrites it to roll the plugin with changed code).
MARK = "A"
#: How long each `bus-test.*` handler sleeps before it records (the test's stuck subscriber sets it).
SLEEP_SECONDS = 0.0
#: How long a `*.gated` event waits for the gate at most.
GATE_SECONDS = 60.0


class EarsPlugin(Plugin):
    name = NAME
    version = "1.0.0"
    description = "Records the events the host's bus delivers to it"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    def _append(self, key: str, item: Any, keep: int = 500) -> None:
        state = self.get_service("state")
        for _attempt in range(100):
            items, version = state.get_versioned(key)
            if state.compare_and_set(key, [*(items or []), item][-keep:], version):
                return
        raise RuntimeError(f"state {key!r}: compare-and-set kept losing")

    def _wait_for_gate(self) -> None:
        deadline = time.monotonic() + GATE_SECONDS
        while time.monotonic() < deadline:
            try:
                if self.get_service("state").get("gate") == "open":
                    return
            except Exception:  # the host is restarting: ask again
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the gate stayed closed for {GATE_SECONDS:g}s")

    @on_event("bus-test.*")
    def numbered(self, event: Event) -> None:
        latency = time.time() - event.time
        if event.topic.endswith(".gated"):
            self._wait_for_gate()
        if SLEEP_SECONDS:
            time.sleep(SLEEP_SECONDS)
        self._append(f"latency/{event.topic}", round(latency, 4))
        self._append(f"got/{event.topic}", event.payload.get("n") if isinstance(event.payload, dict) else None)

    @on_event("sysops.lifecycle")
    def lifecycle(self, event: Event) -> None:
        self._append("lifecycle", f"{event.payload['plugin']}:{event.payload['kind']}", keep=300)

    @on_event("sysops.dead-letter")
    def dead_letter(self, event: Event) -> None:
        self._append("dead-letters", event.payload, keep=50)

    @plugin_command(f"{NAME}-read")
    @argument("key", help="State key (got/TOPIC, latency/TOPIC, lifecycle, dead-letters)")
    def read(self, key: str) -> str:
        return json.dumps(self.get_service("state").get(key, []))

    @plugin_command(f"{NAME}-open-gate")
    def open_gate(self) -> str:
        self.get_service("state").set("gate", "open")
        return "open"

    @plugin_command(f"{NAME}-mark")
    def mark(self) -> str:
        return MARK
