"""A bounded read cache of the `state` service, so a plugin that reads its state often does not wait on SQLite.

Every `state.get` read the store's file. Under a busy host that read, which releases the interpreter lock
twice, cost four times what the call's own work did (bench/bench_host_services.py). The host is the only
writer of its installation's state (one host per installation, holding the host lock), so the values it
read or wrote stay true until it writes them again: the cache keeps the last ones read, up to MAX_BYTES of
JSON and MAX_ENTRIES keys in all (least recently used go first). A write drops the key's entry after it
commits, and a read that raced with any write does not fill the cache (its answer may predate that write).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

#: JSON text kept in all (values are at most 64 KiB each).
MAX_BYTES = 16 * 1024 * 1024
#: Entries kept in all: an absent key costs no JSON text, so without this a plugin reading ever new keys
#: that do not exist grew the cache without end (keys are at most 256 characters: some 30 MiB at most).
MAX_ENTRIES = 65_536

#: (value as JSON text, version) of a key, or None for a key known to be absent.
Entry = tuple[str, int] | None


class StateCache:
    """The last state values read, per (plugin, key), bounded in bytes and in entries."""

    def __init__(self, max_bytes: int = MAX_BYTES, max_entries: int = MAX_ENTRIES) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], Entry] = OrderedDict()
        self._bytes = 0
        self._writes = 0
        self._lock = threading.Lock()

    def lookup(self, plugin: str, key: str) -> tuple[bool, Entry, int]:
        """(whether it is cached, the entry, the write count to hand back to `fill` after a database read)."""
        with self._lock:
            entry_key = (plugin, key)
            if entry_key in self._entries:
                self._entries.move_to_end(entry_key)
                return True, self._entries[entry_key], self._writes
            return False, None, self._writes

    def fill(self, plugin: str, key: str, entry: Entry, writes_before: int) -> None:
        """Keep what a read found, unless a write committed since the read began (`writes_before`)."""
        size = len(entry[0]) if entry is not None else 0
        if size > self.max_bytes:
            return
        with self._lock:
            if self._writes != writes_before:
                return
            self._drop((plugin, key))
            self._entries[(plugin, key)] = entry
            self._bytes += size
            while self._bytes > self.max_bytes or len(self._entries) > self.max_entries:
                _, oldest = self._entries.popitem(last=False)
                self._bytes -= len(oldest[0]) if oldest is not None else 0

    def written(self, plugin: str, key: str | None = None) -> None:
        """A write of `key` (None: every key of the plugin) committed: forget what was read of it."""
        with self._lock:
            self._writes += 1
            if key is not None:
                self._drop((plugin, key))
                return
            for entry_key in [entry_key for entry_key in self._entries if entry_key[0] == plugin]:
                self._drop(entry_key)

    def _drop(self, entry_key: tuple[str, str]) -> None:
        entry = self._entries.pop(entry_key, None)
        if entry is not None:
            self._bytes -= len(entry[0])
