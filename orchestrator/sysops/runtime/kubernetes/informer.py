"""An informer: a local cache of one kind of object, kept by list + watch, that names every change.

It lists the objects once (remembering the list's resourceVersion), then watches from that version, so no
change between the two is missed and none is delivered twice. An event is delivered before it enters the cache:
a handler that raises leaves the cache and the version as they were, and the list that follows (any error
lists again) delivers it again. A watch that ends (its timeout) is opened again
from the last version seen; a version the API server no longer keeps (410 Gone, or an ERROR event saying
so) makes it list again, and the difference with its cache is delivered as ADDED, MODIFIED and DELETED
events. Every `resync_seconds` every cached object is delivered again as SYNC (a handler that missed or
failed something gets another chance). Any other error is logged (once per kind of error) and retried after
a growing back-off, with a list first. `run` returns when its stop event is set (within one watch timeout;
`close` ends the watch at once).

Objects are plain dicts (the API's JSON: an event's `raw_object`), never the client's models.
The server's controller (server/plugin_controller.py) runs one over Plugin objects and one over plugin pods.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

LOG = logging.getLogger("sysops.informer")
ADDED, MODIFIED, DELETED, SYNC = "ADDED", "MODIFIED", "DELETED", "SYNC"
#: Seconds a watch stays open before it is opened again (the API server's own limit is longer).
WATCH_SECONDS = 60
#: Back-off after an error: doubled each time from the first value up to the second.
BACKOFF_SECONDS = (0.5, 30.0)

Handler = Callable[[str, Mapping[str, Any]], None]


class WatchStream(Protocol):
    """What the informer needs of kubernetes.watch.Watch."""

    def stream(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Yield the watch's events."""

    def stop(self) -> None:
        """End the stream after the current event."""


def _default_watch() -> WatchStream:
    from kubernetes import watch

    stream: WatchStream = watch.Watch()  # type: ignore[no-untyped-call]
    return stream


def _key(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"


def _version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


def _gone(exc: ApiException) -> bool:
    return exc.status == 410 or "expired" in str(exc.reason or "").lower()


class Informer:
    """Keeps a cache of the objects `list_call` lists (with `args`, `options`) and calls `handler` on changes."""

    def __init__(
        self,
        what: str,
        list_call: Callable[..., Any],
        handler: Handler,
        *args: Any,
        resync_seconds: float = 300.0,
        watch_seconds: int = WATCH_SECONDS,
        watch_factory: Callable[[], WatchStream] = _default_watch,
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ) -> None:
        self.what = what
        self.list_call = list_call
        self.handler = handler
        self.args = args
        self.options = options
        self.resync_seconds = resync_seconds
        self.watch_seconds = watch_seconds
        self.watch_factory = watch_factory
        self.clock = clock
        #: namespace/name -> the object as last seen.
        self.cache: dict[str, Mapping[str, Any]] = {}
        self.resource_version = ""
        #: How many times it listed (the first list and every relist).
        self.lists = 0
        #: Set once the first list has been delivered.
        self.synced = threading.Event()
        self._watch: WatchStream | None = None
        self._next_resync = 0.0

    # the loop
    def run(self, stop: threading.Event) -> None:
        """List, then watch until `stop`; relist on 410 Gone, resync on schedule, back off on errors."""
        delay = BACKOFF_SECONDS[0]
        failing = ""
        needs_list = True
        while not stop.is_set():
            try:
                if needs_list:
                    self.relist()
                    needs_list = False
                self.watch_once(stop)
                self.resync_if_due()
                if failing:
                    LOG.warning("%s informer works again", self.what)
                failing, delay = "", BACKOFF_SECONDS[0]
            except ApiException as exc:
                if stop.is_set():  # `close` shut the watch
                    return
                if _gone(exc):
                    LOG.info("%s informer: resourceVersion %s expired, listing again", self.what, self.resource_version)
                    needs_list = True
                    continue
                failing, delay = self._failed(exc, failing, delay, stop)
                needs_list = True
            except Exception as exc:  # a lost connection, a handler's bug: logged, backed off, listed again
                if stop.is_set():
                    return
                failing, delay = self._failed(exc, failing, delay, stop)
                needs_list = True

    def _failed(self, exc: Exception, failing: str, delay: float, stop: threading.Event) -> tuple[str, float]:
        summary = f"{type(exc).__name__}: {exc}"
        if summary != failing:
            LOG.warning("%s informer failed (retrying with back-off): %s", self.what, summary, exc_info=exc)
        stop.wait(delay)
        return summary, min(delay * 2, BACKOFF_SECONDS[1])

    def close(self) -> None:
        """End the current watch at once (after `stop` is set, `run` then returns)."""
        watch = self._watch
        if watch is not None:
            watch.stop()
            response = getattr(watch, "_resp", None)
            if response is not None:
                try:
                    response.shutdown()
                except Exception:  # already closed
                    LOG.debug("closing the %s watch", self.what, exc_info=True)

    # list
    def relist(self) -> None:
        """List the objects; deliver what changed since the cache (DELETED for those gone); remember the version."""
        listed = self._list()
        self.lists += 1
        fresh = {_key(item): item for item in listed.get("items") or []}
        for key, obj in list(self.cache.items()):  # each change delivered, then cached: one a handler
            if key not in fresh:  # raised on is delivered again by the next list
                self.handler(DELETED, obj)
                self.cache.pop(key, None)
        for key, obj in fresh.items():
            before = self.cache.get(key)
            if before is None:
                self.handler(ADDED, obj)
            elif _version(before) != _version(obj):
                self.handler(MODIFIED, obj)
            self.cache[key] = obj
        self.resource_version = str((listed.get("metadata") or {}).get("resourceVersion", ""))
        self._next_resync = self.clock() + self.resync_seconds
        self.synced.set()

    def _list(self) -> dict[str, Any]:
        response = self.list_call(*self.args, _preload_content=False, **self.options)
        data = getattr(response, "data", response)
        listed: dict[str, Any] = json.loads(data) if isinstance(data, (bytes, str)) else dict(data)
        return listed

    # watch
    def watch_once(self, stop: threading.Event) -> None:
        """Watch from the last version until the watch times out or `stop`; ApiException(410) when it is gone."""
        watch = self._watch = self.watch_factory()
        timeout = max(1, int(min(self.watch_seconds, max(1.0, self._next_resync - self.clock()))))
        try:
            for event in watch.stream(
                self.list_call,
                *self.args,
                resource_version=self.resource_version,
                timeout_seconds=timeout,
                allow_watch_bookmarks=True,
                **self.options,
            ):
                self.apply(event)
                if stop.is_set():
                    watch.stop()
                    break
                if self.clock() >= self._next_resync:
                    self.resync_if_due()
        finally:
            self._watch = None

    def apply(self, event: Mapping[str, Any]) -> None:
        """Apply one watch event to the cache and deliver it (BOOKMARKs only move the version)."""
        kind = str(event.get("type", ""))
        obj: Mapping[str, Any] = event.get("raw_object") or event.get("object") or {}
        if kind == "ERROR":
            code = int(obj.get("code", 0) or 0)
            raise ApiException(status=code, reason=f"{obj.get('reason', '')}: {obj.get('message', '')}")
        if kind != "BOOKMARK":  # delivered first: when the handler raises, neither the cache nor the version
            self.handler(kind, obj)  # moves, so the list that follows delivers it again
            key = _key(obj)
            if kind == DELETED:
                self.cache.pop(key, None)
            else:
                self.cache[key] = obj
        if _version(obj):
            self.resource_version = _version(obj)

    # resync
    def resync_if_due(self) -> None:
        """Deliver every cached object again as SYNC when `resync_seconds` have passed since the last time."""
        if self.clock() < self._next_resync:
            return
        self._next_resync = self.clock() + self.resync_seconds
        for obj in list(self.cache.values()):
            self.handler(SYNC, obj)
