"""A service plugin: `run()` records a heartbeat in the host's state until the instance stops.

`self.stopping.wait(interval)` sleeps between beats and returns True as soon as the instance shuts down, so
the loop ends at once on a reload or `plugin down`. An exception in the loop ends the process with a line
saying why, and the runtime starts the instance again (the manifest's `service.restart`).
"""

from __future__ import annotations

import time
from typing import Any

from sysops_sdk import ServicePlugin, plugin_command


class HeartbeatPlugin(ServicePlugin):
    name = "heartbeat"
    version = "1.0.0"
    description = "Records a heartbeat every few seconds"

    def initialize(self) -> None:
        self.beats = 0

    def cleanup(self) -> None:
        pass

    def run(self) -> None:
        state = self.get_service("state")
        interval = float(self.get_service("config").get("interval_seconds", 5.0))
        while True:
            self.beats += 1
            state.set("last-beat", {"time": time.time(), "beats": self.beats})
            if self.stopping.wait(interval):
                return

    @plugin_command("heartbeat")
    def heartbeat(self) -> dict[str, Any]:
        """When the loop last beat, and how many beats this instance made."""
        last = self.get_service("state").get("last-beat") or {}
        age = round(time.time() - float(last["time"]), 1) if "time" in last else None
        return {"beats": self.beats, "last_beat_seconds_ago": age}
