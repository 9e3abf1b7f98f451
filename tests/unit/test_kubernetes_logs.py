"""The Kubernetes driver's logs of a restarted pod: the previous run's lines first, as the engine's logs of a
container keep every run (so `plugin status` names a crashed service loop's reason on both runtimes)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from sysops.runtime.kubernetes.driver import KubernetesDriver

RUNS = {True: ["serving on 0.0.0.0:50051", "sysops-plugin: service loop stopped: boom"], False: ["serving again"]}


class _Response:
    def __init__(self, lines: list[str]) -> None:
        self.body = "\n".join(lines).encode()

    def stream(self, size: int) -> Iterator[bytes]:
        yield from (self.body[i : i + size] for i in range(0, len(self.body), size))

    def shutdown(self) -> None:
        pass


class _Core:
    """read_namespaced_pod_log over two runs of one container (previous=True: the one before the restart)."""

    def read_namespaced_pod_log(self, name: str, namespace: str, **options: Any) -> _Response:
        lines = RUNS[options["previous"]]
        tail = options["tail_lines"]
        return _Response(lines if tail is None else lines[max(0, len(lines) - tail) :])


def _driver(running: bool, restart_count: int) -> KubernetesDriver:
    driver = KubernetesDriver(namespace="unit")
    driver._core = _Core()
    status = SimpleNamespace(running=running, restart_count=restart_count)
    driver.inspect = lambda handle: status  # type: ignore[method-assign,assignment,return-value]
    return driver


@pytest.mark.parametrize(
    ("tail", "follow", "expected"),
    [
        (None, False, [*RUNS[True], *RUNS[False]]),
        (2, False, [RUNS[True][-1], *RUNS[False]]),  # the tail counts both runs
        (1, True, [RUNS[True][-1], *RUNS[False]]),  # following: each run's own tail
    ],
)
def test_a_restarted_pod_gives_the_previous_run_first(tail: int | None, follow: bool, expected: list[str]) -> None:
    assert list(_driver(running=True, restart_count=1).logs("pod", tail=tail, follow=follow)) == expected


def test_one_run_or_a_restart_not_yet_running_gives_that_run_only() -> None:
    assert list(_driver(running=True, restart_count=0).logs("pod")) == RUNS[False]
    assert list(_driver(running=False, restart_count=1).logs("pod")) == RUNS[True]
