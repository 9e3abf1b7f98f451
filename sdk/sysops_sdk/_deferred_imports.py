"""Modules a plugin process loads only when something uses them: asyncio and gRPC's asyncio halves.

Importing grpc imports grpc.aio (and grpc_health.v1.health its asyncio servicer), and with them asyncio (and
through it ssl, subprocess, concurrent.futures): about 30 ms of the 80-95 ms of imports a plugin container
spends before it serves, on every cold start, restart and reload, for modules its synchronous server never
uses. So, in a plugin process only (the SDK's
package does this before it imports grpc, when SYSOPS_ENTRYPOINT is set, as the container's is), each of
these is put in sys.modules as a stand-in: importing it binds the stand-in, and the first read of any of
its attributes (from any thread) loads the real module into that same object, which from then on is an
ordinary module. A plugin that uses asyncio (or grpc.aio) gets it whole at its first use.

This is what importlib.util.LazyLoader does, with two differences: Python 3.11's LazyLoader is not
thread-safe (a second thread could read the module half-executed; fixed in 3.12), so a load here holds the
module's lock until it is complete, and a thread that reads it meanwhile waits; and the attributes the
import system itself reads of a module already in sys.modules (`__spec__`, `__name__`, ...) are answered
without loading it, or `import asyncio` alone would load it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import threading
import types
from typing import Any

#: What a plugin process defers (module docstring).
DEFERRED_IN_PLUGINS = ("asyncio", "grpc.aio", "grpc_health.v1._async")
#: Attributes read without loading the module: what `import x` and `from x import y` read of a module that
#: is already in sys.modules (CPython's import_ensure_initialized, importlib._bootstrap._find_and_load).
_IMPORT_SYSTEM_ATTRIBUTES = frozenset({"__spec__", "__name__", "__loader__", "__package__", "__class__"})


class _Deferred(types.ModuleType):
    """A module not loaded yet; the first read of an attribute the import system does not read loads it."""

    def __getattribute__(self, name: str) -> Any:
        if name not in _IMPORT_SYSTEM_ATTRIBUTES:
            _load(self)
        return types.ModuleType.__getattribute__(self, name)  # not super(): the load changes the class


def _load(module: types.ModuleType) -> None:
    """Run `module`'s code in it, once, with its lock held (so other threads wait until it is complete)."""
    state = object.__getattribute__(module, "__dict__")
    lock: threading.RLock | None = state.get("__deferred_lock__")
    if lock is None:
        return  # loaded (the lock goes once the module is an ordinary one)
    with lock:
        if type(module) is not _Deferred or state.get("__deferred_loading__"):
            return  # loaded already, or being loaded by this thread (its own code reading itself)
        state["__deferred_loading__"] = True
        try:
            spec: importlib.machinery.ModuleSpec = state["__spec__"]
            assert spec.loader is not None
            spec.loader.exec_module(module)
            object.__setattr__(module, "__class__", types.ModuleType)
        finally:
            state.pop("__deferred_loading__", None)
        state.pop("__deferred_lock__", None)


def defer(*names: str) -> list[str]:
    """Put a stand-in for each module of `names` that is not imported yet into sys.modules; the names deferred.

    A submodule's package is not imported to find it (that would load what is being deferred): `grpc.aio`
    is found in the directory of `grpc`."""
    deferred = []
    for name in names:
        if name in sys.modules:
            continue
        package, _, _ = name.rpartition(".")
        search = None
        if package:
            parent = importlib.util.find_spec(package) if package not in sys.modules else sys.modules[package].__spec__
            if parent is None or parent.submodule_search_locations is None:
                continue
            search = list(parent.submodule_search_locations)
        spec = importlib.machinery.PathFinder.find_spec(name, search)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        module.__dict__["__deferred_lock__"] = threading.RLock()
        module.__class__ = _Deferred
        sys.modules[name] = module
        deferred.append(name)
    return deferred


def defer_in_plugin_process() -> list[str]:
    """In a plugin process (SYSOPS_ENTRYPOINT set, as the container's is), defer DEFERRED_IN_PLUGINS; elsewhere
    (the orchestrator, a test importing the SDK) nothing."""
    return defer(*DEFERRED_IN_PLUGINS) if os.environ.get("SYSOPS_ENTRYPOINT") else []


defer_in_plugin_process()
