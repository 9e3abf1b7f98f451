"""Leftovers of the hardening issue, on the real engine: a reconcile leaves `docker build` step containers
alone (they carry the image's labels, not an instance's), a call refused during a failed hand-over runs on
the re-opened old instance promptly, and a failed roll through `sysops serve` removes the image it was given.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from sysops.core import router
from sysops.core.client import InvocationResult
from sysops.settings import Settings
from sysops.store import Route, Store

from tests.integration.conftest import SYSOPS, Sysops, installation_containers, wait_for
from tests.integration.test_hardening_rollout import _tally
from tests.integration.test_hardening_server import running_server

pytestmark = pytest.mark.integration
BASE_IMAGE = "sysops/plugin-base:0.1.0"
#: How long the new version's restore() takes before it fails: the old instance stays quiesced that long.
RESTORE_SECONDS = 2.0

# As imaging/image.py generates it: LABEL first, so every later step's container carries the labels.
SLOW_DOCKERFILE = """\
FROM {base}
LABEL sysops.installation="{installation}" sysops.plugin="builder" sysops.version="1.0.0"
USER 0:0
RUN ["sleep", "8"]
"""


def _context(dockerfile: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_reconcile_leaves_a_build_in_progress_alone_and_purge_removes_its_leftovers(
    fresh_sysops: Sysops, engine: docker.DockerClient
) -> None:
    installation = fresh_sysops.installation_id
    tag = f"sysops-plugins/{installation}-builder:1.0.0-test"
    outcome: dict[str, Any] = {}

    def build() -> None:  # the engine's classic builder, as DockerDriver.build_image uses it
        try:
            for chunk in engine.api.build(
                fileobj=io.BytesIO(_context(SLOW_DOCKERFILE.format(base=BASE_IMAGE, installation=installation))),
                custom_context=True,
                tag=tag,
                rm=True,
                forcerm=True,
                network_mode="none",
                decode=True,
            ):
                if "error" in chunk:
                    outcome["error"] = chunk["error"]
        except docker.errors.APIError as exc:
            outcome["error"] = str(exc)

    builder = threading.Thread(target=build, daemon=True)
    builder.start()
    wait_for(lambda: bool(installation_containers(engine, installation, running_only=True)), 30, "the RUN step")
    fresh_sysops.ok("plugin", "ls")  # reconciles the installation while the step runs
    builder.join(timeout=60)
    assert outcome == {}, outcome  # the step's container was not taken for an orphaned instance
    assert engine.images.get(tag).labels["sysops.plugin"] == "builder"

    leftover = engine.containers.create(tag, entrypoint=["true"])  # what a killed build leaves: no instance label
    fresh_sysops.ok("plugin", "ls")
    leftover.reload()  # still there
    fresh_sysops.ok("plugin", "down", "builder", "--purge")
    with pytest.raises(docker.errors.NotFound):
        leftover.reload()
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(tag)


def _current_route(settings: Settings) -> router.RouteLookup:
    def lookup(command: str) -> Route | None:
        store = Store(settings.store_path)
        try:
            return store.route(command)
        finally:
            store.close()

    return lookup


def test_a_call_refused_during_a_failed_hand_over_runs_on_the_old_version_promptly(
    fresh_sysops: Sysops, tmp_path: Path
) -> None:
    plugin_dir = _tally(tmp_path / "tally")
    fresh_sysops.ok("plugin", "up", str(plugin_dir))
    _tally(plugin_dir, marker="v2", restore=f"time.sleep({RESTORE_SECONDS}); raise RuntimeError('cannot take over')")
    lookup = _current_route(Settings(home=fresh_sysops.home))
    calls: list[tuple[float, str]] = []
    roll = subprocess.Popen(
        [SYSOPS, "plugin", "up", str(plugin_dir)], env=fresh_sysops.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        while roll.poll() is None:  # call without pause for as long as the roll runs
            route = lookup("total")
            assert route is not None
            started = time.monotonic()
            try:
                items = list(router.call(route, {}, "text", lookup))
                result = next(i for i in items if isinstance(i, InvocationResult))
                answer = "ok" if result.exit_code == 0 else f"error: {result.error}"
            except Exception as exc:  # named in the assertion below
                answer = f"error: {exc}"
            calls.append((time.monotonic() - started, answer))
        _, stderr = roll.communicate(timeout=60)
    finally:
        if roll.poll() is None:
            roll.kill()
    assert roll.returncode == 6 and b"cannot take over" in stderr, stderr
    assert {answer for _, answer in calls} == {"ok"}, [call for call in calls if call[1] != "ok"]
    assert fresh_sysops.ok("bump") == "v1\n"  # the old version serves on
    longest = max(took for took, _ in calls)
    # One call waited through the quiesce (so it did reach the old instance then), and went back to it
    # once re-opened, far sooner than the 15 s a call used to wait for a successor that never came.
    assert RESTORE_SECONDS / 2 < longest < 5.0, longest


def test_a_failed_roll_through_the_server_removes_the_image_it_was_given(
    engine: docker.DockerClient, tmp_path: Path
) -> None:
    with running_server(engine, tmp_path) as served:
        repository = f"sysops-plugins/{served.settings.installation_id}-hello"
        serving = sorted(tag for image in engine.images.list(name=repository) for tag in image.tags)
        assert len(serving) == 1
        code = served.plugin_dir / "hello_plugin" / "plugin.py"
        code.write_text(code.read_text().replace("self.greeted = 0", "raise RuntimeError('no database')"))
        failed = served.cli.run("plugin", "up", str(served.plugin_dir))
        assert failed.returncode == 6 and "no database" in failed.stderr, failed.stderr
        assert sorted(tag for image in engine.images.list(name=repository) for tag in image.tags) == serving
        assert served.query("status", "hello")["revision"] == 1


def test_remove_labelled_is_not_stopped_by_a_container_removed_while_it_lists(
    engine: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI12: the kubelet removed a pod's container between the engine's list and the per-container inspect
    that docker-py's non-sparse `containers.list` makes, and remove_labelled raised on the 404."""
    from sysops.runtime.docker.driver import DockerDriver

    label = {"sysops.installation": f"vanishing-{time.monotonic_ns()}"}
    container = engine.containers.create(BASE_IMAGE, ["true"], labels=label)
    vanished = engine.containers.create(BASE_IMAGE, ["true"], labels=label)
    real_inspect = engine.api.inspect_container

    def inspect_after_removal(handle: Any) -> Any:  # the other remover won the race for this one
        if str(handle) in (vanished.id, vanished.id[:12]):
            raise docker.errors.NotFound("No such container")
        return real_inspect(handle)

    monkeypatch.setattr(engine.api, "inspect_container", inspect_after_removal)
    try:
        assert DockerDriver(engine).remove_labelled(label) == 2
    finally:
        monkeypatch.undo()
        for leftover in (container, vanished):
            with contextlib.suppress(docker.errors.NotFound):
                leftover.remove(force=True)
    assert engine.containers.list(all=True, filters={"label": [f"{k}={v}" for k, v in label.items()]}) == []
