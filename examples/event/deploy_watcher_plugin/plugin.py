"""An event plugin: reacts to `deploy.*` events, has no commands.

Each event becomes a structured log record (`sysops plugin logs deploy-watcher --structured`) and the count
per topic is kept in the host's state. The host re-sends an event whose handler raised, so handlers should
be idempotent; this one counts an event once by its id.
"""

from __future__ import annotations

from sysops_sdk import Event, EventPlugin, on_event


class DeployWatcherPlugin(EventPlugin):
    name = "deploy-watcher"
    version = "1.0.0"
    description = "Keeps a record of every deploy event"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @on_event("deploy.*")
    def on_deploy(self, event: Event) -> None:
        self.get_service("logs").info(f"{event.topic} from {event.publisher}", event_id=event.id, payload=event.payload)
        state = self.get_service("state")
        counted = state.get(f"seen-{event.id}")
        if counted is None:
            state.set(f"seen-{event.id}", True)
            state.set(f"count-{event.topic}", int(state.get(f"count-{event.topic}", 0)) + 1)
