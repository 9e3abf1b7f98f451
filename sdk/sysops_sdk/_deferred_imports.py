"""gRPC's imports of asyncio, in a plugin process: answered with stand-ins that import the real module on use.

Importing grpc imports grpc.aio (and grpc_health.v1.health its asyncio servicer), and with them asyncio (and
through it ssl, subprocess, concurrent.futures): about 20 ms of the ~90 ms of imports a plugin container
spends before it serves, on every cold start, restart and reload, for modules its synchronous server never
uses. So, in a plugin process only (SYSOPS_ENTRYPOINT set, as the image sets it), the SDK's package imports
grpc and grpc_health first, while stand-ins for those modules are in sys.modules; gRPC's modules bind the
stand-ins. Then the stand-ins leave sys.modules, so every later `import asyncio` (the plugin's, the test
kit's) is an ordinary import. A stand-in that gRPC kept forwards every attribute read or write to the real
module, which it imports through the import system at its first use (so with the import system's own locks,
deadlock detection and partial-module rules).

Not a loader that runs the module's code into the stand-in (importlib.util.LazyLoader): a hostile review
found two faults of that design here. A first use through a submodule (`from asyncio.exceptions import
CancelledError`) ran that submodule twice, making two CancelledError classes; and a first use racing another
thread's `import asyncio.subprocess` deadlocked both (the loading thread held the stand-in's lock and waited
for the submodule's import lock, which the other thread held while it waited for the stand-in).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types
from typing import Any

#: What a plugin process defers (module docstring).
DEFERRED_IN_PLUGINS = ("asyncio", "grpc.aio", "grpc_health.v1._async")
#: Attributes a stand-in answers itself: what `import x` and `from x import y` read of a module in sys.modules
#: (CPython's import_ensure_initialized, importlib._bootstrap._find_and_load) while the stand-ins are there.
_IMPORT_SYSTEM_ATTRIBUTES = frozenset({"__spec__", "__name__", "__loader__", "__package__", "__class__"})


class _StandIn(types.ModuleType):
    """A module gRPC imported while it was deferred: every other attribute is the real module's."""

    def __getattribute__(self, name: str) -> Any:
        if name in _IMPORT_SYSTEM_ATTRIBUTES:
            return types.ModuleType.__getattribute__(self, name)
        return getattr(_real(self), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(_real(self), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(_real(self), name)


def _real(stand_in: types.ModuleType) -> types.ModuleType:
    """The module `stand_in` stands for, imported as any import does (once: then it is in sys.modules)."""
    name: str = object.__getattribute__(stand_in, "__dict__")["__name__"]
    if sys.modules.get(name) is stand_in:  # used before it was released: import the real one all the same
        del sys.modules[name]
    return importlib.import_module(name)


def defer(*names: str) -> list[str]:
    """Put a stand-in for each module of `names` that is not imported yet into sys.modules; the names deferred.

    A submodule's package is not imported to find it (that would import what is being deferred): `grpc.aio`
    is found in the directory of `grpc`."""
    deferred = []
    for name in names:
        if name in sys.modules:
            continue
        package = name.rpartition(".")[0]
        search = None
        if package:
            parent = importlib.util.find_spec(package)
            if parent is None or parent.submodule_search_locations is None:
                continue
            search = list(parent.submodule_search_locations)
        spec = importlib.machinery.PathFinder.find_spec(name, search)
        if spec is None:
            continue
        module = importlib.util.module_from_spec(spec)
        module.__class__ = _StandIn
        sys.modules[name] = module
        deferred.append(name)
    return deferred


def release(names: list[str]) -> None:
    """Take the stand-ins of `names` out of sys.modules: later imports of them are ordinary ones."""
    for name in names:
        if isinstance(sys.modules.get(name), _StandIn):
            del sys.modules[name]


def defer_in_plugin_process() -> list[str]:
    """In a plugin process (SYSOPS_ENTRYPOINT set), import grpc and grpc_health's health module with
    DEFERRED_IN_PLUGINS standing in; elsewhere (the orchestrator, a test importing the SDK) nothing."""
    if not os.environ.get("SYSOPS_ENTRYPOINT"):
        return []
    deferred = defer(*DEFERRED_IN_PLUGINS)
    try:
        import grpc  # noqa: F401  (binds the stand-in of grpc.aio, and cygrpc that of asyncio)
        import grpc_health.v1.health  # noqa: F401  (binds the stand-in of its asyncio servicer)
    finally:
        release(deferred)
    return deferred


defer_in_plugin_process()
