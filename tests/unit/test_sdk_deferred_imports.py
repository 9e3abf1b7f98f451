"""A plugin process imports gRPC without its asyncio halves (sdk/_deferred_imports.py), and asyncio stays whole.

Checked in a fresh interpreter, as a plugin container starts one: with SYSOPS_ENTRYPOINT set, importing the SDK's
server loads neither asyncio nor ssl; then a plugin that uses asyncio, from eight threads at once at its first
use, half of them through `import asyncio.subprocess` (which deadlocked a loader design), gets one asyncio (a
first use through `from asyncio.exceptions import ...` made a second CancelledError class in that design), and
gRPC's own asyncio halves work through the stand-ins gRPC kept. Without SYSOPS_ENTRYPOINT nothing is deferred.
The same probe runs in the real base image in tests/integration/test_plugin_boot_imports.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SDK = Path(__file__).resolve().parents[2] / "sdk"

#: Imports the plugin server as `python -m sysops_sdk` does, then uses what was deferred; prints a JSON report.
PROBE = """
import importlib, json, sys, threading
import sysops_sdk._server
report = {"asyncio_at_boot": "asyncio.base_events" in sys.modules, "ssl_at_boot": "ssl" in sys.modules}
from asyncio.exceptions import CancelledError
import asyncio

async def answer(n):
    await asyncio.sleep(0)
    return n

results, errors, start = [], [], threading.Barrier(8)

def first_use(n):
    start.wait()
    try:
        if n % 2:
            subprocess = importlib.import_module("asyncio.subprocess")  # not binding a local `asyncio`
            results.append(n if subprocess.Process is asyncio.subprocess.Process else -n)
        else:
            results.append(asyncio.run(answer(n)))
    except BaseException as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=first_use, args=(n,), daemon=True) for n in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(10)
errors += ["a thread hung"] * sum(thread.is_alive() for thread in threads)
import grpc
from grpc_health.v1 import health
report.update(
    results=sorted(results),
    errors=errors,
    one_cancelled_error=CancelledError is asyncio.CancelledError is sys.modules["asyncio"].CancelledError,
    module_type=type(sys.modules["asyncio"]).__name__,
    aio_channel=callable(grpc.aio.insecure_channel),
    aio_health=hasattr(health.aio, "HealthServicer"),
)
print(json.dumps(report))
"""


def probe(entrypoint: str | None) -> dict[str, object]:
    env = {key: value for key, value in os.environ.items() if key != "SYSOPS_ENTRYPOINT"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SDK), env.get("PYTHONPATH", "")]))
    if entrypoint is not None:
        env["SYSOPS_ENTRYPOINT"] = entrypoint
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_a_plugin_process_loads_no_asyncio_until_used_and_then_gets_all_of_it() -> None:
    report = probe("plugin.module:Plugin")
    assert report["asyncio_at_boot"] is False and report["ssl_at_boot"] is False
    assert report["results"] == list(range(8)) and report["errors"] == []  # eight threads' first use at once
    assert report["one_cancelled_error"] is True and report["module_type"] == "module"  # the one, ordinary asyncio
    assert report["aio_channel"] is True and report["aio_health"] is True


def test_outside_a_plugin_process_nothing_is_deferred() -> None:
    report = probe(None)
    assert report["asyncio_at_boot"] is True
    assert report["results"] == list(range(8)) and report["errors"] == []
