"""The `metrics` host service and the host's own metrics, exposed in the Prometheus text format.

One prometheus-client `CollectorRegistry` per HostServices holds both. A plugin's metric NAME is exposed
as `sysops_plugin_NAME` with a `plugin` label (the caller, never chosen by the plugin) beside the plugin's
own labels; a name is one family for every plugin, so reusing it with another kind or other label names
is refused, as Prometheus would. Each plugin may create at most METRIC_SERIES_PER_PLUGIN series (label
combinations), so one plugin cannot grow the host's memory without bound. The host counts calls, errors,
latency and restarts per plugin (`record_call`, `record_restart`) and every host service call
(`record_service_call`). Values live in memory: a host restart starts them again, as counters may.
"""

from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from sysops.core.names import shown
from sysops.services.call import Caller, ServiceCallError
from sysops.services.limits import (
    METRIC_BUCKETS,
    METRIC_HELP_CHARS,
    METRIC_LABEL,
    METRIC_LABEL_VALUE_CHARS,
    METRIC_LABELS,
    METRIC_NAME,
    METRIC_NAME_CHARS,
    METRIC_SERIES_PER_PLUGIN,
    check_arguments,
    text_argument,
)

#: What a plugin's metric names are exposed under.
PLUGIN_METRIC_PREFIX = "sysops_plugin_"
#: The label the host adds to every plugin metric (a plugin may not set it).
PLUGIN_LABEL = "plugin"
#: Content type of `render()`.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# `*_created` series (a timestamp per series) would double what `sysops metrics` shows and say little.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus-client leaves it unannotated

Kind = Literal["counter", "gauge", "histogram"]
_Metric = Counter | Gauge | Histogram

_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "counter": ("name", "help", "labels", "amount"),
    "gauge": ("name", "help", "labels", "value"),
    "histogram": ("name", "help", "labels", "value", "buckets"),
}


@dataclass
class _Family:
    kind: Kind
    label_names: tuple[str, ...]
    buckets: tuple[float, ...] | None
    metric: _Metric
    owner: str


@dataclass
class _PluginSeries:
    series: set[tuple[str, tuple[str, ...]]] = field(default_factory=set)


class MetricsService:
    """The registry of plugin and host metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}
        self._series: dict[str, _PluginSeries] = {}
        # labels() costs more than what it counts (a routed call, a host service call): each child is kept
        # (a few per plugin and command), keyed by its metric and label values.
        self._children: dict[tuple[object, ...], Any] = {}
        self.calls = Counter(
            "sysops_calls", "Routed command calls by plugin, command and outcome (ok or error)",
            ("plugin", "command", "outcome"), registry=self.registry,
        )  # fmt: skip
        self.call_seconds = Histogram(
            "sysops_call_seconds", "Duration of routed command calls", ("plugin",), registry=self.registry
        )
        self.restarts = Counter(
            "sysops_restarts", "Instance restarts by plugin", (PLUGIN_LABEL,), registry=self.registry
        )
        self.service_calls = Counter(
            "sysops_host_service_calls", "Host service calls by plugin, service and outcome (ok or the error code)",
            ("plugin", "service", "outcome"), registry=self.registry,
        )  # fmt: skip

    # the host's own metrics
    def record_call(self, plugin: str, command: str, seconds: float, ok: bool) -> None:
        """Count one routed command call of `plugin` and its duration."""
        self._child(self.calls, plugin, command, "ok" if ok else "error").inc()
        self._child(self.call_seconds, plugin).observe(max(seconds, 0.0))

    def record_restart(self, plugin: str) -> None:
        """Count one restart of an instance of `plugin`."""
        self.restarts.labels(plugin).inc()

    def record_service_call(self, plugin: str, service: str, outcome: str) -> None:
        """Count one host service call (outcome: "ok" or the error code)."""
        self._child(self.service_calls, plugin, service, outcome).inc()

    def _child(self, metric: Counter | Histogram, *values: str) -> Any:
        """`metric.labels(*values)`, made once (dict operations are atomic: no lock is needed to read)."""
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def render(self) -> bytes:
        """Every metric in the Prometheus text exposition format (CONTENT_TYPE)."""
        return generate_latest(self.registry)

    # the plugins' metrics
    def handle(self, caller: Caller, method: str, arguments: dict[str, Any]) -> None:
        """Run one `metrics` method (counter, gauge, histogram) for the calling plugin."""
        check_arguments(arguments, _ARGUMENTS[method], f"metrics.{method}")
        name = _metric_name(arguments)
        help_text = text_argument(arguments, "help", METRIC_HELP_CHARS, default="")
        labels = _labels(arguments.get("labels", {}))
        kind: Kind = "counter" if method == "counter" else "gauge" if method == "gauge" else "histogram"
        if kind == "counter":
            amount = _number(arguments, "amount", 1)
            if amount < 0:
                raise ServiceCallError("invalid_argument", f"metrics.counter: 'amount' must be >= 0 (got {amount:g})")
        else:
            amount = _number(arguments, "value", None)
        buckets = _buckets(arguments.get("buckets")) if kind == "histogram" else None
        metric = self._series_of(caller.plugin, kind, name, help_text, labels, buckets)
        if isinstance(metric, Counter):
            metric.inc(amount)
        elif isinstance(metric, Gauge):
            metric.set(amount)
        else:
            metric.observe(amount)

    def forget_plugin(self, plugin: str) -> None:
        """Drop every series of `plugin` (after `plugin down`)."""
        with self._lock:
            series = self._series.pop(plugin, _PluginSeries()).series
            for family_name, values in series:
                self._families[family_name].metric.remove(plugin, *values)

    def _series_of(
        self,
        plugin: str,
        kind: Kind,
        name: str,
        help_text: str,
        labels: dict[str, str],
        buckets: tuple[float, ...] | None,
    ) -> _Metric:
        family_name = PLUGIN_METRIC_PREFIX + name
        label_names = tuple(sorted(labels))
        values = tuple(labels[label] for label in label_names)
        with self._lock:
            owned = self._series.setdefault(plugin, _PluginSeries()).series
            is_new = (family_name, values) not in owned
            if is_new and len(owned) >= METRIC_SERIES_PER_PLUGIN:  # before a family is made: none past the quota
                raise ServiceCallError(
                    "resource_exhausted",
                    f"plugin '{plugin}' has {len(owned)} metric series, the most a plugin may (use fewer label values)",
                )
            family = self._families.get(family_name) or self._new_family(plugin, kind, family_name, help_text,
                                                                         label_names, buckets)  # fmt: skip
            if family.kind != kind or family.label_names != label_names:
                raise ServiceCallError(
                    "invalid_argument",
                    f"metric {shown(name)} is a {family.kind} with labels [{', '.join(family.label_names)}] "
                    f"(defined by plugin '{family.owner}'); "
                    f"it cannot be a {kind} with labels [{', '.join(label_names)}]",
                )
            if kind == "histogram" and buckets is not None and buckets != family.buckets:
                raise ServiceCallError(
                    "invalid_argument",
                    f"histogram {shown(name)} has other buckets already (defined by '{family.owner}')",
                )
            if is_new:
                owned.add((family_name, values))
            return family.metric.labels(plugin, *values)

    def _new_family(
        self,
        plugin: str,
        kind: Kind,
        family_name: str,
        help_text: str,
        label_names: tuple[str, ...],
        buckets: tuple[float, ...] | None,
    ) -> _Family:
        names = (PLUGIN_LABEL, *label_names)
        metric: _Metric
        try:
            if kind == "counter":
                metric = Counter(family_name, help_text, names, registry=self.registry)
            elif kind == "gauge":
                metric = Gauge(family_name, help_text, names, registry=self.registry)
            elif buckets is None:
                metric = Histogram(family_name, help_text, names, registry=self.registry)
            else:
                metric = Histogram(family_name, help_text, names, buckets=buckets, registry=self.registry)
        except ValueError as exc:  # the name clashes with a series another family exposes (x_total, x_count...)
            raise ServiceCallError("invalid_argument", f"metric {shown(family_name)}: {exc}") from None
        family = _Family(kind, label_names, buckets, metric, plugin)
        self._families[family_name] = family
        return family


def _metric_name(arguments: dict[str, Any]) -> str:
    name = text_argument(arguments, "name", METRIC_NAME_CHARS)
    if not METRIC_NAME.fullmatch(name):
        raise ServiceCallError("invalid_argument", f"metric name {shown(name)} must match [a-zA-Z_:][a-zA-Z0-9_:]*")
    return name


def _labels(labels: Any) -> dict[str, str]:
    if not isinstance(labels, dict):
        raise ServiceCallError("invalid_argument", "metric 'labels' must be an object of label name -> string value")
    if len(labels) > METRIC_LABELS:
        raise ServiceCallError("invalid_argument", f"a metric has at most {METRIC_LABELS} labels (got {len(labels)})")
    for label, value in labels.items():
        if not METRIC_LABEL.fullmatch(label) or label.startswith("__") or label == PLUGIN_LABEL:
            raise ServiceCallError(
                "invalid_argument",
                f"label name {shown(label)} must match [a-zA-Z_][a-zA-Z0-9_]*, not start with '__', not be 'plugin'",
            )
        if not isinstance(value, str) or len(value) > METRIC_LABEL_VALUE_CHARS:
            raise ServiceCallError(
                "invalid_argument",
                f"label {shown(label)} must have a string value of at most {METRIC_LABEL_VALUE_CHARS} characters",
            )
    return dict(labels)


def _finite(value: Any) -> bool:
    """Whether `value` is a JSON number a float holds (an integer of 400 digits parses, and overflows a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _number(arguments: dict[str, Any], name: str, default: float | None) -> float:
    value: Any = arguments.get(name, default)
    if not _finite(value):
        raise ServiceCallError("invalid_argument", f"metric '{name}' must be a finite number (got {shown(value)})")
    return float(value)


def _buckets(buckets: Any) -> tuple[float, ...] | None:
    if buckets is None:
        return None
    if (
        not isinstance(buckets, list)
        or not 0 < len(buckets) <= METRIC_BUCKETS
        or not all(_finite(bucket) for bucket in buckets)
        or any(later <= earlier for earlier, later in itertools.pairwise(buckets))
    ):
        raise ServiceCallError(
            "invalid_argument",
            f"histogram 'buckets' must be 1 to {METRIC_BUCKETS} finite numbers in increasing order "
            f"(got {shown(buckets)})",
        )
    return tuple(float(bucket) for bucket in buckets)
