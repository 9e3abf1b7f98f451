"""The heartbeat plugin's tests, with the sysops test kit: its run() loop in a thread, stopped as a reload would."""

import threading

import pytest
from sysops_sdk.testing import PluginUnderTest


def test_the_loop_beats_until_the_instance_stops(plugin: PluginUnderTest) -> None:
    if plugin.mode != "inprocess":
        pytest.skip("drives the plugin object's run() loop by hand")
    plugin.host.config["interval_seconds"] = 0.01
    loop = threading.Thread(target=plugin.instance.run)
    loop.start()
    try:
        while plugin.instance.beats < 3:
            loop.join(0.01)
    finally:
        plugin.instance.stopping.set()
        loop.join(5)
    assert not loop.is_alive()
    result = plugin.invoke("heartbeat")
    assert result.exit_code == 0
    assert result.data["beats"] >= 3 and result.data["last_beat_seconds_ago"] < 5


def test_no_beat_yet(plugin: PluginUnderTest) -> None:
    if plugin.mode != "inprocess":
        pytest.skip("in a container the service loop beats at once")
    assert plugin.invoke("heartbeat").data == {"beats": 0, "last_beat_seconds_ago": None}
