"""Each thread keeps one open store (core/thread_stores.py): a routed call does not pay for opening it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sysops.core import thread_stores
from sysops.core.thread_stores import ThreadStores
from sysops.store import Store


def test_a_thread_reuses_its_store_and_another_thread_gets_its_own(tmp_path: Path) -> None:
    stores = ThreadStores(tmp_path / "state.db")
    first = stores.get()
    assert stores.get() is first
    other: list[Store] = []
    worker = threading.Thread(target=lambda: other.append(stores.get()))
    worker.start()
    worker.join()
    assert other and other[0] is not first


def test_a_replaced_store_file_is_opened_again(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    stores = ThreadStores(path)
    first = stores.get()
    path.rename(tmp_path / "old.db")
    second = stores.get()
    assert second is not first and path.exists()


def test_opening_happens_once_per_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Path] = []

    class Counting(Store):
        def __init__(self, path: Path) -> None:
            opened.append(path)
            super().__init__(path)

    monkeypatch.setattr(thread_stores, "Store", Counting)
    stores = ThreadStores(tmp_path / "state.db")
    for _ in range(50):
        stores.get().routes()
    stores.close_current()
    stores.get()
    assert len(opened) == 2
