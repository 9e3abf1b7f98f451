"""The plugin server's start imports only what serving needs: a cold start's CPU is mostly imports, and a plugin
with a CPU limit (the manifest's cpu_percent, enforced from its first instruction) pays each millisecond of them
at that rate. hmac (a token's check), ctypes (a cancellation) and sysops_sdk.usage (Describe's usage, pathlib)
are imported where they are used instead.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sysops.core.client import PluginClient
from sysops.errors import PluginUnavailableError
from sysops_sdk import Plugin
from sysops_sdk._server import PluginRuntime, PluginServer, load_plugin_class

DEFERRED = ("hmac", "ctypes", "sysops_sdk.usage")


def test_the_plugin_server_module_imports_none_of_the_deferred_modules() -> None:
    code = f"import sys, sysops_sdk._server; print(' '.join(m for m in {DEFERRED!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


def test_the_deferred_imports_still_serve_their_callers() -> None:
    code = (
        "from sysops_sdk._server import TokenAuthInterceptor; from sysops_sdk._cancel import _async_raise; "
        "import sys; TokenAuthInterceptor('t'); _async_raise(0, None); "
        f"print(' '.join(m for m in {DEFERRED[:2]!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == ["hmac", "ctypes"]


def _hello() -> Plugin:
    """The hello example's plugin (examples/hello)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "hello"))
    try:
        return load_plugin_class("hello_plugin.plugin:HelloPlugin")()
    finally:
        sys.path.pop(0)


def test_a_token_server_still_refuses_a_wrong_token_and_serves_the_right_one(tmp_path: Path) -> None:
    server = PluginServer(PluginRuntime(_hello()), f"unix://{tmp_path}/plugin.sock", token="right")
    server.start()
    try:
        for token, answers in (("wrong", False), ("right", True)):
            with PluginClient(f"unix://{tmp_path}/plugin.sock", "hello", token) as client:
                if answers:
                    assert client.describe().name == "hello"
                else:
                    with pytest.raises(PluginUnavailableError, match=r"UNAUTHENTICATED|token"):
                        client.describe()
    finally:
        server.shutdown(0.1)
