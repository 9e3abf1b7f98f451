"""How the test kit's container mode maps the `plugin` fixture's calls onto the sysops CLI and back.

The command line an `invoke` becomes, the result read from what the CLI printed with `--output json`, and a
metric read from the host's Prometheus text. The end-to-end path is in tests/integration/test_plugin_test_kit.py.
"""

from __future__ import annotations

import subprocess

from sysops_sdk._kit_container import _option_words, _result, metric_value


def completed(stdout: str, code: int = 0, stderr: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(["sysops"], code, stdout, stderr)


def test_options_become_flags() -> None:
    assert _option_words("shout", True) == ["--shout"]
    assert _option_words("dry_run", False) == []
    assert _option_words("times", 2) == ["--times", "2"]
    assert _option_words("tag", ["a", "b"]) == ["--tag", "a", "--tag", "b"]


def test_a_text_result_is_text_and_lines() -> None:
    result = _result(completed("HELLO, WORLD!\n"))
    assert (result.text, result.lines, result.data, result.exit_code) == ("HELLO, WORLD!", ["HELLO, WORLD!"], None, 0)


def test_a_stream_is_lines() -> None:
    assert _result(completed("1\n2\n3\n")).lines == ["1", "2", "3"]


def test_json_data_is_data() -> None:
    result = _result(completed('{\n  "plugin": "hello"\n}\n'))
    assert result.data == {"plugin": "hello"} and result.text == "" and result.lines == []
    assert _result(completed("42\n")).text == "42"  # a text result that happens to be a JSON number stays text


def test_a_failure_keeps_the_code_and_the_message() -> None:
    result = _result(completed("", 1, "error: hello: fail: disk on fire\n"))
    assert result.exit_code == 1 and result.error == "hello: fail: disk on fire"


PROMETHEUS = """\
# HELP monitor_check_value Last value of each check
# TYPE monitor_check_value gauge
monitor_check_value{plugin="monitoring",check="disk-root"} 42.0
monitor_check_value{plugin="monitoring",check="cpu"} 7.5
monitor_checks_total{plugin="monitoring",check="cpu"} 3.0
"""


def test_metric_values_by_name_and_labels() -> None:
    assert metric_value(PROMETHEUS, "monitor_check_value", {"check": "cpu"}) == 7.5
    assert metric_value(PROMETHEUS, "monitor_check_value", {"check": "disk-root"}) == 42.0
    assert metric_value(PROMETHEUS, "monitor_checks", {"check": "cpu"}) == 3.0
    assert metric_value(PROMETHEUS, "monitor_check_value", {"check": "mem"}) is None
    assert metric_value(PROMETHEUS, "absent", {}) is None


def test_a_plugin_counter_is_found_under_the_name_the_host_exposes() -> None:
    # The host exposes a plugin's counter NAME as sysops_plugin_NAME_total (prometheus-client adds _total).
    exposed = 'sysops_plugin_c_event_events_total{plugin="c-event"} 2.0\n'
    assert metric_value(exposed, "c_event_events", {}) == 2.0
    assert metric_value(exposed, "c_event_events_total", {}) == 2.0
