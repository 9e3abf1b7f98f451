"""The host services core (services/dispatch.py and its services) over a tmp SYSOPS_HOME: no host, no engine."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sysops.services import dispatch, limits, logs, metrics
from sysops.services.call import NOT_CACHED
from sysops.services.dispatch import Caller, HostServices, ServiceCallError
from sysops.settings import Settings
from sysops.store import Store

ASKED = [
    "state.read",
    "state.write",
    "config.read",
    "metrics.write",
    "alerts.read",
    "alerts.write",
    "events.publish",
    "logs.write",
]
CONFIG_SCHEMA = {
    "threshold": {"type": "int", "default": 90, "help": "percent of disk"},
    "mode": {"type": "str", "choices": ["fast", "safe"], "default": "safe"},
    "ratio": {"type": "float"},
    "tags": {"type": "list", "default": []},
}
POLICY = 'plugins:\n  "*": {grants: [logs.write, "state.*"]}\n  mon: {grants: ["*"], config: {threshold: 80}}\n'
MON = Caller("mon", "mon-1", 3)

Published = list[tuple[str, Any, str]]


def _save_plugin(settings: Settings, name: str, permissions: list[str], config: dict[str, Any] | None = None) -> None:
    store = Store(settings.store_path)
    manifest: dict[str, Any] = {"name": name, "version": "1.0.0", "permissions": permissions}
    if config is not None:
        manifest["config"] = config
    store.save_plugin(name, "/src", "docker", manifest)
    store.close()


def _write_policy(settings: Settings, text: str) -> Path:
    path = settings.home / "policy.yaml"
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))  # a new mtime even within the clock's granularity
    return path


@pytest.fixture
def published() -> Published:
    return []


@pytest.fixture
def services(settings: Settings, published: Published) -> Iterator[HostServices]:
    _save_plugin(settings, "mon", ASKED, CONFIG_SCHEMA)
    _save_plugin(settings, "other", ["state.read", "state.write", "events.publish"])
    _write_policy(settings, POLICY)

    def publish(topic: str, payload: Any, publisher: str) -> int:
        published.append((topic, payload, publisher))
        return len(published)

    host_services = HostServices(settings, settings.store_path, publish)
    yield host_services
    host_services.close()


def _call(services: HostServices, what: str, caller: Caller = MON, /, **arguments: Any) -> Any:
    service, method = what.split(".")
    return services.call(caller, service, method, arguments)


def _refused(
    services: HostServices, what: str, code: str, fragment: str, caller: Caller = MON, /, **arguments: Any
) -> str:
    with pytest.raises(ServiceCallError) as caught:
        _call(services, what, caller, **arguments)
    assert caught.value.code == code, str(caught.value)
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)
    return str(caught.value)


# state
def test_state_get_set_list_delete(services: HostServices) -> None:
    assert _call(services, "state.get", key="a") == {"found": False, "value": None, "version": 0}
    first = _call(services, "state.set", key="b/1", value={"x": [1, 2]})["version"]
    second = _call(services, "state.set", key="a", value="text")["version"]
    third = _call(services, "state.set", key="b/2", value=None)["version"]
    assert first < second < third
    assert _call(services, "state.get", key="b/1") == {"found": True, "value": {"x": [1, 2]}, "version": first}
    assert _call(services, "state.list") == {"keys": ["a", "b/1", "b/2"]}
    assert _call(services, "state.list", prefix="b/") == {"keys": ["b/1", "b/2"]}
    assert _call(services, "state.list", prefix="%") == {"keys": []}
    assert _call(services, "state.delete", key="a") == {"deleted": True}
    assert _call(services, "state.delete", key="a") == {"deleted": False}
    assert _call(services, "state.list") == {"keys": ["b/1", "b/2"]}


def test_state_is_per_plugin_and_persistent(services: HostServices, settings: Settings) -> None:
    _call(services, "state.set", key="k", value=1)
    other = Caller("other", "other-1", 1)
    assert _call(services, "state.get", other, key="k")["found"] is False
    _call(services, "state.set", other, key="k", value=2)
    again = HostServices(settings, settings.store_path, None)
    try:
        assert again.call(MON, "state", "get", {"key": "k"})["value"] == 1
        assert again.call(other, "state", "get", {"key": "k"})["value"] == 2
    finally:
        again.close()


def test_state_cas(services: HostServices) -> None:
    assert _call(services, "state.cas", key="c", expected_version=0, value=1)["ok"] is True
    version = _call(services, "state.get", key="c")["version"]
    assert _call(services, "state.cas", key="c", expected_version=0, value=2) == {"ok": False, "version": version}
    assert _call(services, "state.cas", key="c", expected_version=version + 5, value=2)["ok"] is False
    moved = _call(services, "state.cas", key="c", expected_version=version, value=2)
    assert moved["ok"] is True and moved["version"] > version
    # a version is never reused for a key, even after delete and re-create
    _call(services, "state.delete", key="c")
    recreated = _call(services, "state.cas", key="c", expected_version=0, value=3)["version"]
    assert recreated > moved["version"]
    assert _call(services, "state.cas", key="c", expected_version=moved["version"], value=4)["ok"] is False
    _refused(services, "state.cas", "invalid_argument", "expected_version", key="c", expected_version=-1, value=1)
    _refused(services, "state.cas", "invalid_argument", "expected_version", key="c", expected_version="1", value=1)
    _refused(services, "state.cas", "invalid_argument", "'value' is required", key="c", expected_version=0)


def test_state_argument_limits(services: HostServices) -> None:
    _call(services, "state.set", key="k" * limits.STATE_KEY_CHARS, value=1)
    _refused(services, "state.set", "invalid_argument", "above 256", key="k" * 257, value=1)
    _refused(services, "state.get", "invalid_argument", "must not be empty", key="")
    _refused(services, "state.get", "invalid_argument", "must be a string", key=5)
    _refused(services, "state.get", "invalid_argument", "takes no argument 'kye'", kye="x")
    almost = "x" * (limits.STATE_VALUE_BYTES - 2)  # the JSON quotes make it exactly the limit
    _call(services, "state.set", key="big", value=almost)
    _refused(services, "state.set", "invalid_argument", "above 65536", key="big", value=almost + "x")
    _refused(services, "state.set", "invalid_argument", "not JSON", key="nan", value=float("nan"))


def test_state_quota_of_keys(services: HostServices, monkeypatch: pytest.MonkeyPatch) -> None:
    assert limits.STATE_KEYS_PER_PLUGIN == 1000
    for index in range(1000):
        services.state.set("mon", f"k{index}", index)
    _refused(services, "state.set", "resource_exhausted", "holds 1000 state keys", key="one-more", value=1)
    _call(services, "state.set", key="k1", value="overwrite is fine")
    _call(services, "state.delete", key="k2")
    _call(services, "state.set", key="one-more", value=1)
    _call(services, "state.set", Caller("other", "o", 1), key="k", value=1)  # another plugin has its own quota


def test_state_quota_of_bytes(services: HostServices) -> None:
    assert limits.STATE_BYTES_PER_PLUGIN == 4 * 1024 * 1024
    chunk = "x" * (60 * 1024)
    stored = 0
    with pytest.raises(ServiceCallError) as caught:
        for index in range(100):
            _call(services, "state.set", key=f"k{index}", value=chunk)
            stored += 1
    assert caught.value.code == "resource_exhausted"
    assert "above the 4194304" in str(caught.value)
    assert stored == limits.STATE_BYTES_PER_PLUGIN // (len(chunk) + 2)  # 68 values of 60 KiB (and quotes)
    keys, size = services.state.usage("mon")
    assert keys == stored and size <= limits.STATE_BYTES_PER_PLUGIN
    _call(services, "state.set", key="k0", value="small")  # shrinking a value is always fine
    _call(services, "state.set", key="k99", value=chunk)


def test_state_cas_from_many_threads_loses_no_version(services: HostServices) -> None:
    threads, rounds = 8, 25
    versions: list[int] = []
    errors: list[BaseException] = []

    def increment() -> None:
        try:
            for _ in range(rounds):
                while True:
                    current = _call(services, "state.get", key="counter")
                    value = current["value"] or 0
                    result = _call(
                        services, "state.cas", key="counter", expected_version=current["version"], value=value + 1
                    )
                    if result["ok"]:
                        versions.append(result["version"])
                        break
        except BaseException as error:  # surfaced below
            errors.append(error)

    workers = [threading.Thread(target=increment) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert not errors
    assert _call(services, "state.get", key="counter")["value"] == threads * rounds
    assert len(set(versions)) == threads * rounds


# permissions
def test_a_permission_not_asked_is_refused_whatever_the_policy(services: HostServices, settings: Settings) -> None:
    other = Caller("other", "other-1", 1)
    message = _refused(services, "metrics.counter", "permission_denied", "", other, name="x")
    assert message == (
        "plugin 'other' needs permission 'metrics.write' for metrics.counter, which its manifest does not ask "
        "for (add it to permissions: in plugin.yaml)"
    )
    _write_policy(settings, 'plugins: {"*": {grants: ["*"]}}\n')
    _refused(services, "metrics.counter", "permission_denied", "does not ask for", other, name="x")


def test_a_permission_asked_but_not_granted_names_where_to_grant_it(services: HostServices, settings: Settings) -> None:
    other = Caller("other", "other-1", 1)
    _call(services, "state.set", other, key="k", value=1)  # granted by the "*" entry's wildcard
    message = _refused(services, "events.publish", "permission_denied", "", other, topic="t", payload=1)
    policy = settings.home / "policy.yaml"
    assert message == (
        "plugin 'other' needs permission 'events.publish' for events.publish, which policy does not grant "
        f"(add it under plugins.other.grants in {policy})"
    )
    _write_policy(settings, POLICY + "  other: {grants: [events.*]}\n")  # a grant added works at once
    assert _call(services, "events.publish", other, topic="t", payload=1) == {"id": 1}
    _write_policy(settings, "plugins: {}\n")  # a grant removed stops working within RECHECK_SECONDS
    _after_the_recheck_window()
    _refused(services, "state.get", "permission_denied", "which policy does not grant", other, key="k")


def _after_the_recheck_window() -> None:
    time.sleep(dispatch.RECHECK_SECONDS + 0.05)


def test_a_grant_is_taken_from_the_last_check_for_a_quarter_second_only(
    services: HostServices, settings: Settings
) -> None:
    """The hot path trusts a grant found by a full check for RECHECK_SECONDS (no manifest read, no stat), never
    a refusal: a revoked grant lasts at most that long."""
    other = Caller("other", "other-1", 1)
    _call(services, "state.get", other, key="k")
    _write_policy(settings, "plugins: {}\n")
    _call(services, "state.get", other, key="k")  # within the window: the last check's grant holds
    _after_the_recheck_window()
    _refused(services, "state.get", "permission_denied", "which policy does not grant", other, key="k")


def test_a_cached_state_get_is_answered_from_memory_as_call_answers_it(services: HostServices) -> None:
    """`cached_call` (what a listener answers on its event loop) gives `call`'s answer for a granted, cached read,
    counts it, and leaves everything else to `call`: a value not cached yet, a grant not checked lately, writes."""
    other = Caller("other", "other-1", 1)
    assert services.cached_call(MON, "state", "get", {"key": "k"}) is NOT_CACHED  # no check yet
    _call(services, "state.set", MON, key="k", value={"v": 1})
    assert services.cached_call(MON, "state", "get", {"key": "k"}) is NOT_CACHED  # the write dropped the entry
    assert _call(services, "state.get", MON, key="k") == {"found": True, "value": {"v": 1}, "version": 1}
    assert services.cached_call(MON, "state", "get", {"key": "k"}) == {"found": True, "value": {"v": 1}, "version": 1}
    assert services.cached_call(MON, "state", "set", {"key": "k", "value": 2}) is NOT_CACHED
    _call(services, "state.set", MON, key="big", value="x" * 5000)
    _call(services, "state.get", MON, key="big")
    assert services.cached_call(MON, "state", "get", {"key": "big"}) is NOT_CACHED  # large: decoded on a thread
    assert services.cached_call(other, "state", "get", {"key": "k"}) is NOT_CACHED  # no check of `other` yet
    assert _call(services, "state.get", other, key="k") == {"found": False, "value": None, "version": 0}
    assert services.cached_call(other, "state", "get", {"key": "k"})["found"] is False  # its own state, not MON's
    for value, answered in (("x" * 4094, True), ("x" * 4095, False), ("é" * 300, True), ("é" * 400, False)):
        _call(services, "state.set", MON, key="sized", value=value)  # JSON of 4096 and 4097 characters; escaped
        _call(services, "state.get", MON, key="sized")  # as \\uXXXX (up to 12 bytes) outside ASCII
        assert (services.cached_call(MON, "state", "get", {"key": "sized"}) is not NOT_CACHED) is answered, value[:3]
    with pytest.raises(ServiceCallError) as caught:
        services.cached_call(MON, "state", "get", {"key": "k", "extra": 1})
    assert caught.value.code == "invalid_argument"
    calls = {
        (sample.labels["service"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(services.metrics.render().decode())
        for sample in family.samples
        if sample.name == "sysops_host_service_calls_total" and sample.labels.get("plugin") == "mon"
    }
    assert calls[("state", "ok")] == 15 and calls[("state", "invalid_argument")] == 1  # 12 by call, 3 from memory
    _after_the_recheck_window()
    assert services.cached_call(MON, "state", "get", {"key": "k"}) is NOT_CACHED  # the grant is checked again


def test_no_policy_file_grants_nothing(services: HostServices, settings: Settings) -> None:
    (settings.home / "policy.yaml").unlink()
    _refused(services, "state.get", "permission_denied", "which policy does not grant", key="k")


def test_an_invalid_policy_serves_nothing(services: HostServices, settings: Settings) -> None:
    _write_policy(settings, "plugins: {mon: {grants: [Bad]}}\n")
    _refused(services, "state.get", "unavailable", "cannot read its policy", key="k")
    _refused(services, "config.all", "unavailable", "cannot read its policy")


def test_unknown_service_or_method(services: HostServices) -> None:
    _refused(services, "storage.get", "not_found", "unknown host service 'storage' (services: alerts, config")
    _refused(services, "state.put", "not_found", "host service 'state' has no method 'put' (methods: cas, delete")
    with pytest.raises(ServiceCallError, match="must be a JSON object"):
        services.call(MON, "state", "get", ["k"])  # type: ignore[arg-type]


def test_permission_report_and_granted(services: HostServices, settings: Settings) -> None:
    report = services.permission_report("other")
    assert report.asked == ("events.publish", "state.read", "state.write")
    assert report.granted == ("state.read", "state.write")
    assert report.refused == ("events.publish",)
    assert services.granted("mon") == frozenset(ASKED)
    assert services.granted("unknown") == frozenset()
    assert services.subscription_refusal("mon") is not None  # mon does not ask for events.subscribe


def test_command_refusal(services: HostServices, settings: Settings) -> None:
    _save_plugin(settings, "deploy", ["service.scale", "system.deploy"])
    _write_policy(settings, "plugins: {deploy: {grants: [system.*]}}\n")
    assert services.command_refusal("deploy", ["system.deploy"], "deploy-service") is None
    assert services.command_refusal("deploy", [], "deploy-service") is None
    refusal = services.command_refusal("deploy", ["system.deploy", "service.scale"], "deploy-service")
    assert refusal == (
        "plugin 'deploy' needs permission 'service.scale' for command 'deploy-service', which policy does not "
        f"grant (add it under plugins.deploy.grants in {settings.home / 'policy.yaml'})"
    )
    assert "does not ask for" in (services.command_refusal("deploy", ["db.drop"], "deploy-service") or "")


# config
def test_config_precedence(services: HostServices) -> None:
    assert _call(services, "config.all") == {"values": {"threshold": 80, "mode": "safe", "ratio": None, "tags": []}}
    assert _call(services, "config.get", key="threshold") == {"found": True, "value": 80}
    assert _call(services, "config.get", key="ratio") == {"found": False, "value": None}
    assert _call(services, "config.get", key="undeclared") == {"found": False, "value": None}
    assert services.config.set_value("mon", "threshold", "70") == 70
    assert services.config.set_value("mon", "ratio", "2") == 2
    assert services.config.set_value("mon", "tags", '["a", "b"]') == ["a", "b"]
    assert services.config.set_value("mon", "mode", "fast") == "fast"
    assert _call(services, "config.all")["values"] == {"threshold": 70, "mode": "fast", "ratio": 2, "tags": ["a", "b"]}
    assert services.config.show("mon") == [
        {"key": "mode", "value": "fast", "source": "set", "help": ""},
        {"key": "ratio", "value": 2, "source": "set", "help": ""},
        {"key": "tags", "value": ["a", "b"], "source": "set", "help": ""},
        {"key": "threshold", "value": 70, "source": "set", "help": "percent of disk"},
    ]
    assert services.config.unset_value("mon", "threshold") is True
    assert services.config.unset_value("mon", "threshold") is False
    assert services.config.show("mon")[3] == {
        "key": "threshold",
        "value": 80,
        "source": "policy",
        "help": "percent of disk",
    }


def test_config_set_refusals(services: HostServices) -> None:
    cases = [
        ("threshold", "high", "plugin 'mon' config key 'threshold' (set by `plugin config set`) must be of type int"),
        ("threshold", "true", "must be of type int"),
        ("mode", "slow", "must be one of 'fast', 'safe' (got 'slow')"),
        ("tags", "{}", "must be of type list"),
        ("nope", "1", "plugin 'mon' declares no config key 'nope' (its keys: mode, ratio, tags, threshold)"),
    ]
    for key, raw, fragment in cases:
        with pytest.raises(ServiceCallError) as caught:
            services.config.set_value("mon", key, raw)
        assert caught.value.code == "invalid_argument"
        assert fragment in str(caught.value)
    with pytest.raises(ServiceCallError) as caught:
        services.config.set_value("ghost", "k", "1")
    assert caught.value.code == "not_found"


def test_config_invalid_values_are_refused_at_read_time(services: HostServices, settings: Settings) -> None:
    _write_policy(settings, POLICY.replace("threshold: 80", "threshold: lots"))
    _refused(services, "config.all", "invalid_argument", "plugin 'mon' config key 'threshold' (from the policy) must")
    _write_policy(settings, POLICY)
    _save_plugin(settings, "mon", ASKED, {**CONFIG_SCHEMA, "token": {"required": True}})
    _refused(services, "config.get", "invalid_argument", "config key 'token' is required and has no value", key="token")
    services.config.set_value("mon", "token", "abc")
    assert _call(services, "config.get", key="token") == {"found": True, "value": "abc"}
    # the schema changed under a stored value: refused when read
    services.config.set_value("mon", "threshold", "5")
    _save_plugin(settings, "mon", ASKED, {**CONFIG_SCHEMA, "threshold": {"type": "int", "choices": [1, 2]}})
    _refused(services, "config.all", "invalid_argument", "(set by `plugin config set`) must be one of 1, 2 (got 5)")


# metrics
def _families(services: HostServices) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(services.metrics.render().decode())}


def _sample(services: HostServices, name: str, **labels: str) -> float:
    for family in _families(services).values():
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


def test_metrics_counter_gauge_histogram(services: HostServices) -> None:
    other = Caller("other", "o", 1)
    _save_plugin(services.settings, "other", ["metrics.write"])
    _write_policy(services.settings, 'plugins: {"*": {grants: ["*"]}}\n')
    assert _call(services, "metrics.counter", name="requests", help="Requests", labels={"path": "/a"}) is None
    _call(services, "metrics.counter", name="requests", labels={"path": "/a"}, amount=2.5)
    _call(services, "metrics.counter", other, name="requests", labels={"path": "/a"})
    _call(services, "metrics.gauge", name="disk_used", value=41.5)
    _call(services, "metrics.gauge", name="disk_used", value=42)
    _call(services, "metrics.histogram", name="latency", value=0.3, buckets=[0.1, 0.5, 1])
    _call(services, "metrics.histogram", name="latency", value=0.05)
    assert _sample(services, "sysops_plugin_requests_total", plugin="mon", path="/a") == 3.5
    assert _sample(services, "sysops_plugin_requests_total", plugin="other", path="/a") == 1
    assert _sample(services, "sysops_plugin_disk_used", plugin="mon") == 42
    assert _sample(services, "sysops_plugin_latency_bucket", plugin="mon", le="0.1") == 1
    assert _sample(services, "sysops_plugin_latency_bucket", plugin="mon", le="0.5") == 2
    assert _sample(services, "sysops_plugin_latency_count", plugin="mon") == 2
    assert _families(services)["sysops_plugin_requests"].type == "counter"
    assert _families(services)["sysops_plugin_requests"].documentation == "Requests"
    services.metrics.forget_plugin("mon")
    assert 'plugin="mon"' not in services.metrics.render().decode().split("sysops_host_service_calls")[0]


def test_metrics_refusals(services: HostServices) -> None:
    _call(services, "metrics.counter", name="jobs", labels={"queue": "a"})
    clash = "metric 'jobs' is a counter with labels [queue]"
    _refused(services, "metrics.gauge", "invalid_argument", clash, name="jobs", value=1)
    _refused(services, "metrics.counter", "invalid_argument", "cannot be a counter with labels [kind]", name="jobs",
             labels={"kind": "x"})  # fmt: skip
    _refused(services, "metrics.counter", "invalid_argument", "must match", name="bad-name")
    _refused(services, "metrics.counter", "invalid_argument", "above 100", name="n" * 101)
    _call(services, "metrics.counter", name="n" * 100)
    _refused(services, "metrics.counter", "invalid_argument", "at most 10 labels", name="many",
             labels={f"l{i}": "v" for i in range(11)})  # fmt: skip
    _call(services, "metrics.counter", name="ten", labels={f"l{i}": "v" for i in range(10)})
    _refused(services, "metrics.counter", "invalid_argument", "not be 'plugin'", name="x", labels={"plugin": "fake"})
    _refused(services, "metrics.counter", "invalid_argument", "not start with '__'", name="x", labels={"__a": "b"})
    _refused(services, "metrics.counter", "invalid_argument", "string value", name="x", labels={"a": 1})
    _refused(services, "metrics.counter", "invalid_argument", "'amount' must be >= 0", name="x", amount=-1)
    _refused(services, "metrics.gauge", "invalid_argument", "finite number", name="g", value=float("inf"))
    _refused(services, "metrics.gauge", "invalid_argument", "finite number", name="g")
    _refused(services, "metrics.histogram", "invalid_argument", "increasing order", name="h", value=1, buckets=[2, 1])
    _call(services, "metrics.histogram", name="h", value=1, buckets=[1, 2])
    _refused(services, "metrics.histogram", "invalid_argument", "other buckets", name="h", value=1, buckets=[1, 3])
    _refused(services, "metrics.counter", "invalid_argument", "Duplicated", name="h_count")


def test_metrics_series_cap_per_plugin(services: HostServices, monkeypatch: pytest.MonkeyPatch) -> None:
    assert limits.METRIC_SERIES_PER_PLUGIN == 1000
    monkeypatch.setattr(metrics, "METRIC_SERIES_PER_PLUGIN", 5)
    for index in range(5):
        _call(services, "metrics.counter", name="hits", labels={"user": str(index)})
    _refused(
        services, "metrics.counter", "resource_exhausted", "has 5 metric series", name="hits", labels={"user": "x"}
    )
    _call(services, "metrics.counter", name="hits", labels={"user": "0"})  # an existing series is fine
    _write_policy(services.settings, 'plugins: {"*": {grants: ["*"]}}\n')
    _save_plugin(services.settings, "other", ["metrics.write"])
    _call(services, "metrics.counter", Caller("other", "o", 1), name="hits", labels={"user": "x"})


def test_host_metrics(services: HostServices) -> None:
    services.metrics.record_call("mon", "disk check", 0.2, True)
    services.metrics.record_call("mon", "disk check", 0.4, False)
    services.metrics.record_restart("mon")
    _call(services, "state.get", key="k")
    _refused(services, "events.publish", "permission_denied", "", Caller("other", "o", 1), topic="t", payload=1)
    assert _sample(services, "sysops_calls_total", plugin="mon", command="disk check", outcome="ok") == 1
    assert _sample(services, "sysops_calls_total", plugin="mon", command="disk check", outcome="error") == 1
    assert _sample(services, "sysops_call_seconds_count", plugin="mon") == 2
    assert _sample(services, "sysops_call_seconds_sum", plugin="mon") == pytest.approx(0.6)
    assert _sample(services, "sysops_restarts_total", plugin="mon") == 1
    assert _sample(services, "sysops_host_service_calls_total", plugin="mon", service="state", outcome="ok") == 1
    assert (
        _sample(
            services, "sysops_host_service_calls_total", plugin="other", service="events", outcome="permission_denied"
        )
        == 1
    )
    assert "_created" not in services.metrics.render().decode()


# alerts
def test_alerts_raise_update_resolve_and_publish(services: HostServices, published: Published) -> None:
    first = _call(services, "alerts.raise", name="disk", severity="warning", message="85% used")["id"]
    again = _call(services, "alerts.raise", name="disk", severity="critical", message="95% used")["id"]
    assert again == first
    listed = _call(services, "alerts.list")["alerts"]
    assert len(listed) == 1
    assert listed[0]["severity"] == "critical" and listed[0]["message"] == "95% used" and listed[0]["count"] == 2
    assert _call(services, "alerts.resolve", name="disk") == {"resolved": True}
    assert _call(services, "alerts.resolve", name="disk") == {"resolved": False}
    assert _call(services, "alerts.list") == {"alerts": []}
    reopened = _call(services, "alerts.raise", name="disk", severity="info", message="again")["id"]
    assert reopened != first
    assert [(topic, payload["action"], payload["severity"], publisher) for topic, payload, publisher in published] == [
        ("sysops.alerts", "raised", "warning", "sysops"),
        ("sysops.alerts", "raised", "critical", "sysops"),
        ("sysops.alerts", "resolved", "critical", "sysops"),
        ("sysops.alerts", "raised", "info", "sysops"),
    ]
    assert published[0][1]["plugin"] == "mon" and published[0][1]["name"] == "disk"
    everything = services.alerts.list(include_resolved=True)
    assert [(alert.id, alert.open) for alert in everything] == [(first, False), (reopened, True)]
    assert services.alerts.list("other") == []


def test_alerts_refusals(services: HostServices, settings: Settings) -> None:
    _refused(services, "alerts.raise", "invalid_argument", "severity must be one of info, warning, critical",
             name="a", severity="fatal", message="m")  # fmt: skip
    _refused(services, "alerts.raise", "invalid_argument", "above 128", name="a" * 129, severity="info", message="m")
    _refused(services, "alerts.raise", "invalid_argument", "non-empty", name="", severity="info", message="m")
    _refused(services, "alerts.raise", "invalid_argument", "'message' is required", name="a", severity="info")
    long_message = "m" * (limits.ALERT_MESSAGE_CHARS + 1)
    _refused(
        services, "alerts.raise", "invalid_argument", "above 4096", name="a", severity="info", message=long_message
    )
    _call(services, "alerts.raise", name="a" * 128, severity="info", message=long_message[:-1])
    without_bus = HostServices(settings, settings.store_path, None)  # alerts work without a bus
    try:
        assert without_bus.call(MON, "alerts", "raise", {"name": "a", "severity": "info", "message": "m"})["id"] > 0
    finally:
        without_bus.close()


# events
def test_events_publish(services: HostServices, published: Published, settings: Settings) -> None:
    assert _call(services, "events.publish", topic="disk.full", payload={"pct": 99}) == {"id": 1}
    assert published == [("disk.full", {"pct": 99}, "plugin:mon")]
    _refused(services, "events.publish", "permission_denied", "published by the host", topic="sysops.alerts", payload=1)
    _refused(services, "events.publish", "invalid_argument", "must match", topic="Disk", payload=1)
    _refused(services, "events.publish", "invalid_argument", "must match", topic="a" * 129, payload=1)
    _call(services, "events.publish", topic="a" * 128, payload=None)
    big = "x" * limits.EVENT_PAYLOAD_BYTES
    _refused(services, "events.publish", "invalid_argument", "above 65536", topic="t", payload=big)
    without_bus = HostServices(settings, settings.store_path, None)
    try:
        with pytest.raises(ServiceCallError) as caught:
            without_bus.call(MON, "events", "publish", {"topic": "t", "payload": 1})
        assert caught.value.code == "unavailable"
        without_bus.set_publish(lambda topic, payload, publisher: 7)
        assert without_bus.call(MON, "events", "publish", {"topic": "t", "payload": 1}) == {"id": 7}
    finally:
        without_bus.close()


# logs
def test_logs_carry_the_callers_identity(services: HostServices) -> None:
    assert _call(services, "logs.write", level="warning", message="disk at 85%", fields={"pct": 85}) is None
    _call(services, "logs.write", message="default level")
    records = services.logs.records("mon")
    assert [(r.plugin, r.instance, r.revision, r.level, r.message, r.fields) for r in records] == [
        ("mon", "mon-1", 3, "warning", "disk at 85%", {"pct": 85}),
        ("mon", "mon-1", 3, "info", "default level", {}),
    ]
    assert services.logs.records("mon", after=records[0].id) == records[1:]
    assert services.logs.records("other") == []
    _refused(services, "logs.write", "invalid_argument", "log level must be one of", level="fatal", message="m")
    _refused(services, "logs.write", "invalid_argument", "above 8192", message="m" * (limits.LOG_MESSAGE_BYTES + 1))
    _call(services, "logs.write", message="m" * limits.LOG_MESSAGE_BYTES)
    _refused(services, "logs.write", "invalid_argument", "must be an object", message="m", fields=[1])
    big_fields = {"x": "y" * limits.LOG_FIELDS_BYTES}
    _refused(services, "logs.write", "invalid_argument", "log fields are above 16384", message="m", fields=big_fields)
    _refused(services, "logs.write", "invalid_argument", "'message' must be a string", message=None)


def test_logs_are_bounded_per_plugin(services: HostServices, monkeypatch: pytest.MonkeyPatch) -> None:
    assert limits.LOGS_PER_PLUGIN == 5000
    monkeypatch.setattr(logs, "LOGS_PER_PLUGIN", 10)
    other = Caller("other", "o", 1)
    services.logs.write(other, "info", "kept", {})
    for index in range(25):
        services.logs.write(MON, "info", f"line {index}", {})
    kept = services.logs.records("mon")
    assert [record.message for record in kept] == [f"line {index}" for index in range(15, 25)]
    assert [record.message for record in services.logs.latest("mon", limit=3)] == ["line 22", "line 23", "line 24"]
    assert [record.message for record in services.logs.records("other")] == ["kept"]


def test_config_get_reads_one_key_even_when_another_is_invalid(services: HostServices, settings: Settings) -> None:
    _write_policy(settings, POLICY.replace("threshold: 80", "threshold: lots"))
    assert _call(services, "config.get", key="mode") == {"found": True, "value": "safe"}
    _refused(services, "config.get", "invalid_argument", "config key 'threshold' (from the policy)", key="threshold")


def test_connections_of_ended_threads_do_not_pile_up(services: HostServices) -> None:
    def fd_count() -> int:
        return len(os.listdir("/proc/self/fd"))

    def one_call() -> None:
        _call(services, "state.get", key="k")

    counts = []
    for _ in range(3):
        for _ in range(50):
            worker = threading.Thread(target=one_call)
            worker.start()
            worker.join()
        gc.collect()  # a thread's store goes with its thread-local (sqlite3 keeps a few fds for reuse)
        counts.append(fd_count())
    assert counts[2] <= counts[0] + 3, counts


def test_a_changed_manifest_changes_the_grants(services: HostServices, settings: Settings) -> None:
    other = Caller("other", "other-1", 1)
    _call(services, "state.get", other, key="k")
    _save_plugin(settings, "other", ["state.write"])  # a new `plugin up` no longer asks state.read
    _after_the_recheck_window()
    _refused(services, "state.get", "permission_denied", "does not ask for", other, key="k")
    _save_plugin(settings, "other", ["state.read"])
    _call(services, "state.get", other, key="k")


def test_a_plugin_named_like_the_host_or_the_operator_publishes_as_itself(settings: Settings) -> None:
    """Publishers of plugins are `plugin:NAME`: a plugin named `sysops` cannot publish the host's `sysops.*`
    topics through the real bus, and one named `operator` does not pass for the operator."""
    import threading

    from sysops.services.bus import BusEvent, EventBus

    for name in ("sysops", "operator"):
        _save_plugin(settings, name, ["events.publish"])
    _write_policy(settings, 'plugins:\n  "*": {grants: [events.publish]}\n')
    delivered: list[BusEvent] = []
    arrived = threading.Event()

    def deliver(plugin: str, event: BusEvent) -> None:
        delivered.append(event)
        arrived.set()

    bus = EventBus(settings.store_path, deliver)
    bus.subscribe("listener", ["ops.*"])
    bus.start()
    services = HostServices(settings, settings.store_path, bus.publish)
    try:
        impostor = Caller("sysops", "i-1", 1)
        _refused(services, "events.publish", "permission_denied", "published by the host", impostor,
                 topic="sysops.lifecycle", payload={"plugin": "x", "kind": "failed", "message": ""})  # fmt: skip
        _call(services, "events.publish", Caller("operator", "i-2", 1), topic="ops.note", payload=1)
        assert arrived.wait(10)
        assert [(event.topic, event.publisher) for event in delivered] == [("ops.note", "plugin:operator")]
    finally:
        services.close()
        bus.stop()


def test_state_reads_are_cached_and_a_write_is_seen_at_once(services: HostServices) -> None:
    """The read cache (services/state_cache.py) answers repeated gets, and every kind of write shows at once."""
    assert _call(services, "state.set", key="k", value=1)["version"] > 0
    assert _call(services, "state.get", key="k")["value"] == 1
    assert services.state.cache.lookup("mon", "k")[0]  # the read filled it
    version = _call(services, "state.set", key="k", value=2)["version"]
    assert _call(services, "state.get", key="k") == {"found": True, "value": 2, "version": version}
    assert _call(services, "state.cas", key="k", expected_version=version, value=3)["ok"] is True
    assert _call(services, "state.get", key="k")["value"] == 3
    assert _call(services, "state.delete", key="k") == {"deleted": True}
    assert _call(services, "state.get", key="k")["found"] is False
    assert _call(services, "state.get", key="k")["found"] is False  # an absent key is cached too
    _call(services, "state.set", key="k", value=4)
    assert _call(services, "state.get", key="k")["value"] == 4


def test_the_state_cache_drops_a_read_that_raced_a_write_and_stays_bounded() -> None:
    from sysops.services.state_cache import StateCache

    cache = StateCache(max_bytes=10)
    _, _, writes = cache.lookup("p", "k")
    cache.written("p", "k")  # a write committed while the read was at the database
    cache.fill("p", "k", ("1", 1), writes)  # the read's (maybe older) answer is not kept
    assert cache.lookup("p", "k")[0] is False
    for key in "abcdef":
        _, _, writes = cache.lookup("p", key)
        cache.fill("p", key, ("1234", 1), writes)
    kept = [key for key in "abcdef" if cache.lookup("p", key)[0]]
    assert kept == ["e", "f"]  # 10 bytes: the two most recent values of 4
    cache.written("p")
    assert not any(cache.lookup("p", key)[0] for key in "ef")
