"""Publishes on the host's event bus through `Plugin.publish`: one event, or a bounded loop of numbered ones."""

from __future__ import annotations

import json
import time

from sysops_sdk import Plugin, argument, option, plugin_command

#: The plugin's name (the test rewrites it with the manifest's); its commands are prefixed with it.
NAME = "herald"


class HeraldPlugin(Plugin):
    name = NAME
    version = "1.0.0"
    description = "Publishes numbered events on the host's bus"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command(f"{NAME}-publish")
    @argument("topic", help="Topic")
    @argument("payload", help="Payload as JSON")
    def publish_one(self, topic: str, payload: str) -> str:
        return str(self.publish(topic, json.loads(payload)))

    @plugin_command(f"{NAME}-publish-many", timeout=120)
    @argument("topic", help="Topic")
    @argument("count", type=int, help="Events to publish, payload {'n': 1..count}")
    @option("--interval", type=float, default=0.0, help="Seconds between two events")
    @option("--seconds", type=float, default=60.0, help="Stop after this long even if count is not reached")
    def publish_many(self, topic: str, count: int, interval: float, seconds: float) -> str:
        """Publish {'n': 1}, {'n': 2}, ... in order; print how many, and when the first and last went out."""
        started = time.time()
        published = 0
        last = started
        for number in range(1, count + 1):
            if time.time() - started > seconds:
                break
            self.publish(topic, {"n": number, "sent": time.time()})
            published, last = number, time.time()
            if interval:
                time.sleep(interval)
        return json.dumps({"published": published, "first": started, "last": last})
