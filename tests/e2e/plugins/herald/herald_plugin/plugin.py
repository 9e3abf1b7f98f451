"""Publishes on the event bus (`events.publish`) and counts what it published (`metrics.write`)."""

from __future__ import annotations

from sysops_sdk import Plugin, argument, plugin_command


class HeraldPlugin(Plugin):
    name = "herald"
    version = "1.0.0"
    description = "Publishes events and counts them in a metric"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("announce")
    @argument("topic", help="Topic")
    @argument("number", help="Number carried in the payload")
    def announce(self, topic: str, number: str) -> str:
        event_id = self.publish(topic, {"n": int(number)})
        self.get_service("metrics").counter("herald_announced", "Events published").inc()
        return f"event {event_id}"
