"""Records each `news.*` event it receives under `heard/<n>` in its state (the build that took it as the
value); `heard` lists the numbers; `shout` tries to publish (the test's policy does not grant it)."""

from __future__ import annotations

from sysops_sdk import Event, Plugin, argument, on_event, plugin_command

#: Which build of the plugin serves (the test rewrites it before a roll).
MARK = "A"


class ListenerPlugin(Plugin):
    name = "listener"
    version = "1.0.0"
    description = "Records the events it receives in its state"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @on_event("news.*")
    def record(self, event: Event) -> None:
        self.get_service("state").set(f"heard/{int(event.payload['n']):05d}", MARK)

    @plugin_command("heard")
    def heard(self) -> str:
        keys = self.get_service("state").list("heard/")
        return " ".join(str(int(key.removeprefix("heard/"))) for key in keys)

    @plugin_command("shout")
    @argument("topic", help="Topic")
    def shout(self, topic: str) -> str:
        return f"event {self.publish(topic, {'n': 0})}"
