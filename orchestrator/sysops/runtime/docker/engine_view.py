"""What the engine holds for one installation, kept current by the engine's event stream, so a quiet host asks nothing.

Reconciliation looks at every instance of the installation every few seconds. With fifty plugins a pass made
about 200 engine calls (the installation's listing with an inspect per container, then per plugin the same
again and a volume inspect per instance): 0.2 s of CPU every 5 s, most of an idle host's. Yet the engine
announces every change of a container (create, start, die, update, destroy, ...) on its event stream. While
an `EngineView` is subscribed to the installation's container events it keeps the listing (the ids) and
each container's inspect JSON, and an event drops what it concerns: the listing on a create, destroy or
rename, the container's JSON on any of its events.

It answers only while subscribed. Before the subscription is made, after it breaks (until it is made again,
with a backoff) and for another installation's labels, `labelled` returns None and the caller asks the
engine. What was fetched while any event arrived is not kept (it may predate the change the event tells of),
and the listing and inspects are dropped every `refresh_seconds`, so even a change the stream missed is seen
within that (a value derived from a container's state, such as its data volume's device, stays while the
container is listed and has no event: it lasts as long as the container).
The JSON returned is shared: callers read it and never change it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from sysops.runtime.base import LABEL_INSTALLATION

LOG = logging.getLogger("sysops.engine_view")
#: Everything known is dropped this often, whatever the stream said.
REFRESH_SECONDS = 60.0
#: Seconds between attempts to subscribe again after the stream broke, doubling up to the cap.
RESUBSCRIBE_SECONDS = (0.5, 30.0)
#: The container events that change what a listing or an inspect shows (exec_*, attach, top, ... change nothing).
EVENTS = (
    "create", "start", "restart", "die", "kill", "oom", "stop", "destroy", "update", "pause", "unpause", "rename",
    "health_status",
)  # fmt: skip
_MEMBERSHIP = frozenset({"create", "destroy", "rename"})


def _in_transition(attrs: Mapping[str, Any]) -> bool:
    """A state the engine may leave without an event (a restart by its policy that fails to start ends
    stopped, silently): asked again each time instead of kept."""
    state = attrs.get("State") or {}
    return bool(state.get("Restarting")) or state.get("Status") in ("created", "removing", "dead")


class EventStream(Protocol):
    """The engine's event stream as docker-py returns it: decoded events, and `close` from another thread."""

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        """The events, as they come."""
        ...

    def close(self) -> None:
        """End the stream (a reader blocked in it returns)."""
        ...


class EngineFetch(Protocol):
    """How the view asks the engine for what it does not hold."""

    def list_ids(self) -> list[str]:
        """Ids of the installation's instances and network holders (one listing call)."""
        ...

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        """A container's inspect JSON; None when it is gone."""
        ...


class EngineView:
    """The installation's containers as last inspected, valid while subscribed to its events (module docstring)."""

    def __init__(
        self,
        subscribe: Callable[[Mapping[str, object]], EventStream],
        installation: str,
        *,
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.installation = installation
        self._subscribe = subscribe
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._stream: EventStream | None = None
        self._live = False
        #: Counts events; a fetch is kept only if no event arrived while it ran.
        self._epoch = 0
        self._filled_at = 0.0
        self._ids: list[str] | None = None
        self._attrs: dict[str, dict[str, Any]] = {}
        self._derived: dict[tuple[str, str], str] = {}
        #: `labelled` answers per label selector, made from what is held (a pass asks once per plugin).
        self._answers: dict[tuple[tuple[str, str], ...], list[dict[str, Any]]] = {}

    @property
    def live(self) -> bool:
        """Whether the view is subscribed (and so answers)."""
        with self._lock:
            return self._live

    def run(self, stop: threading.Event) -> None:
        """Subscribe and follow the stream until `stop` (closing the stream at `stop` ends the read at once)."""
        threading.Thread(target=self._close_at, args=(stop,), name="sysops-view-stop", daemon=True).start()
        backoff = RESUBSCRIBE_SECONDS[0]
        while not stop.is_set():
            try:
                stream = self._subscribe(
                    {"type": "container", "event": list(EVENTS), "label": f"{LABEL_INSTALLATION}={self.installation}"}
                )
            except Exception as exc:  # the engine is away: callers ask it directly (and see that themselves)
                LOG.debug("cannot follow the engine's events (%s); trying again in %gs", exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, RESUBSCRIBE_SECONDS[1])
                continue
            self._follow(stream, stop)
            backoff = RESUBSCRIBE_SECONDS[0]
            stop.wait(backoff)

    def _close_at(self, stop: threading.Event) -> None:
        stop.wait()
        self.close()

    def _follow(self, stream: EventStream, stop: threading.Event) -> None:
        with self._lock:
            self._forget_all()
            self._stream, self._live = stream, not stop.is_set()
        if stop.is_set():  # stopped while subscribing: `close` found no stream to end
            self.close()
        try:
            for event in stream:
                self._saw(event)
        except Exception as exc:  # a closed or broken stream: stop answering until subscribed again
            LOG.debug("the engine's event stream ended: %s", exc)
        finally:
            with self._lock:
                self._live, self._stream = False, None
                self._forget_all()

    def close(self) -> None:
        """Stop answering and end the stream's read (from any thread)."""
        with self._lock:
            self._live = False
            stream, self._stream = self._stream, None
            self._forget_all()
        if stream is not None:
            try:
                stream.close()
            except Exception as exc:  # already broken: nothing more to close
                LOG.debug("closing the event stream: %s", exc)

    def changed(self) -> None:
        """Something changed a container just now: drop everything held (its event is still on its way)."""
        with self._lock:
            self._forget_all()

    def _saw(self, event: Mapping[str, Any]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        container_id = str((event.get("Actor") or {}).get("ID") or event.get("id") or "")
        with self._lock:
            self._epoch += 1
            self._answers = {}
            self._attrs.pop(container_id, None)
            self._derived = {key: value for key, value in self._derived.items() if key[0] != container_id}
            if action.split(":")[0] in _MEMBERSHIP or not container_id:
                self._ids = None

    def _forget_all(self, *, keep_derived: bool = False) -> None:  # holding the lock
        """Drop what is held; the periodic refresh keeps the derived values (they last as long as their
        container, and any event of it, or its leaving the listing, drops them)."""
        self._epoch += 1
        self._ids, self._attrs, self._answers = None, {}, {}
        if not keep_derived:
            self._derived = {}
        self._filled_at = self._clock()

    def labelled(self, labels: Mapping[str, str], fetch: EngineFetch) -> list[dict[str, Any]] | None:
        """Inspect JSON of the installation's containers that carry all `labels` (fetching what is not held);
        None when the view cannot answer (not subscribed, or another installation's labels)."""
        with self._lock:
            if not self._live or labels.get(LABEL_INSTALLATION) != self.installation:
                return None
            if self._clock() - self._filled_at >= self._refresh_seconds:
                self._forget_all(keep_derived=True)
            selector = tuple(sorted(labels.items()))
            answer = self._answers.get(selector)
            if answer is not None:
                return list(answer)
            first_epoch, ids = self._epoch, self._ids
        if ids is None:
            ids = fetch.list_ids()
            self._keep(first_epoch, functools.partial(self._store_ids, ids))
        found = []
        all_held = True
        for container_id in ids:
            with self._lock:
                epoch, attrs = self._epoch, self._attrs.get(container_id)
            if attrs is None:
                attrs = fetch.inspect(container_id)
                if attrs is None:
                    continue
                if _in_transition(attrs):
                    all_held = False
                else:
                    self._keep(epoch, functools.partial(self._attrs.__setitem__, container_id, attrs))
            container_labels = (attrs.get("Config") or {}).get("Labels") or {}
            if all(container_labels.get(key) == value for key, value in labels.items()):
                found.append(attrs)
        if all_held:  # every container in it is held as of `first_epoch`: the same question gets the same answer
            self._keep(first_epoch, functools.partial(self._answers.__setitem__, selector, found))
        return list(found)

    def _store_ids(self, ids: list[str]) -> None:  # holding the lock
        """Keep a listing, and the derived values of the containers in it only."""
        self._ids = ids
        listed = set(ids)
        self._derived = {key: value for key, value in self._derived.items() if key[0] in listed}

    def held(self, container_id: str) -> dict[str, Any] | None:
        """A container's inspect JSON if the view holds it (nothing is fetched), else None."""
        with self._lock:
            if not self._live or self._clock() - self._filled_at >= self._refresh_seconds:
                return None
            return self._attrs.get(container_id)

    def derived(self, container_id: str, key: str, compute: Callable[[], str]) -> str:
        """A value computed from engine state that lasts as long as the container does (its data volume's
        device: an in-use volume cannot be removed), kept while subscribed and no event of it came."""
        with self._lock:
            epoch, known = self._epoch, self._derived.get((container_id, key))
        if known is not None:
            return known
        value = compute()
        self._keep(epoch, functools.partial(self._derived.__setitem__, (container_id, key), value))
        return value

    def _keep(self, epoch: int, store: Callable[[], None]) -> None:
        """Store what was fetched, unless an event arrived (or the subscription ended) since `epoch` was read."""
        with self._lock:
            if self._live and self._epoch == epoch:
                store()
