"""Development mode on the real engine (`sysops plugin up --dev`, issue 15 item 1): the code is mounted
read-only instead of built into the image, and a spare instance started after each roll is claimed by the
next one; still a rolling replacement with readiness, rollback and `down --purge` leaving nothing."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from tests.integration.conftest import Sysops, copy_example, installation_containers, wait_for
from tests.integration.test_hot_reload import _set_greeting

pytestmark = pytest.mark.integration
SPARE = "sysops.spare"


def _containers(engine: docker.DockerClient, sysops: Sysops) -> tuple[list[str], list[str]]:
    """(serving containers, spare containers) of the installation that run."""
    running = [c for c in installation_containers(engine, sysops.installation_id) if c.status == "running"]
    serving = sorted(c.id for c in running if SPARE not in c.labels and "sysops.role" not in c.labels)
    spares = sorted(c.id for c in running if SPARE in c.labels and c.id not in _claimed(engine, sysops))
    return serving, spares


def _claimed(engine: docker.DockerClient, sysops: Sysops) -> set[str]:
    """Spare containers that a roll claimed (they now serve): the store's active instances."""
    from sysops.settings import Settings
    from sysops.store import Store

    store = Store(Settings(home=sysops.home).store_path)
    try:
        return {instance.handle for instance in store.active_instances("hello")}
    finally:
        store.close()


def _up(sysops: Sysops, plugin_dir: Path) -> str:
    result = sysops.run("plugin", "up", str(plugin_dir), "--dev")
    assert result.returncode == 0, result.stderr
    return result.stderr


def _up_production(sysops: Sysops, plugin_dir: Path) -> str:
    result = sysops.run("plugin", "up", str(plugin_dir))
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_saves_roll_on_claimed_spares_without_a_build(
    fresh_sysops: Sysops, engine: docker.DockerClient, tmp_path: Path
) -> None:
    sysops = fresh_sysops
    plugin_dir = copy_example("hello", tmp_path)
    first = _up(sysops, plugin_dir)
    assert "building image" in first
    assert sysops.ok("greet", "World").strip() == "Hello, World!"
    serving, spares = _containers(engine, sysops)
    assert len(serving) == 1 and len(spares) == 1, (serving, spares)
    container = engine.containers.get(next(iter(_claimed(engine, sysops))))
    code_mounts = [m for m in container.attrs["Mounts"] if m["Destination"] == "/plugin-dev"]
    assert [m["RW"] for m in code_mounts] == [False]
    written = container.exec_run(["touch", "/plugin-dev/planted"], user=container.attrs["Config"]["User"])
    assert written.exit_code != 0 and b"Read-only file system" in written.output
    image = container.image.id

    # A code-only save: the spare is claimed, nothing is built, and another spare is left for the next one.
    _set_greeting(plugin_dir, "Howdy")
    second = _up(sysops, plugin_dir)
    assert "claiming spare instance" in second and "building image" not in second, second
    assert sysops.ok("greet", "World").strip() == "Howdy, World!"
    now_serving = _claimed(engine, sysops)
    assert now_serving == set(spares), "the roll did not run on the spare"
    assert {engine.containers.get(handle).image.id for handle in now_serving} == {image}
    _, spares = _containers(engine, sysops)
    assert len(spares) == 1 and spares[0] not in now_serving

    # The resident host restarts: its reconciliation keeps the spare, which the next save claims.
    sysops.stop_host()
    sysops.ok("plugin", "ls")
    assert _containers(engine, sysops)[1] == spares
    _set_greeting(plugin_dir, "Ahoy")
    assert "claiming spare instance" in _up(sysops, plugin_dir)
    assert sysops.ok("greet", "World").strip() == "Ahoy, World!"

    # A reboot empties the socket directory that kept the claim: the restarted process waits as a spare again,
    # and reconciliation tells it its code again.
    serving_now = engine.containers.get(next(iter(_claimed(engine, sysops))))
    socket_dir = next(m["Source"] for m in serving_now.attrs["Mounts"] if m["Destination"] == "/run/sysops")
    (Path(socket_dir) / "claimed").unlink()
    serving_now.restart(timeout=2)
    sysops.ok("plugin", "ls")  # a reconcile pass (the restarted process may not wait as a spare yet: the next one)
    wait_for(lambda: sysops.run("greet", "World").stdout.strip() == "Ahoy, World!", 30, "the reclaimed spare to serve")

    # A spare that died is not claimed: the roll starts an instance as production does, and leaves a new spare.
    engine.containers.get(_containers(engine, sysops)[1][0]).kill()
    _set_greeting(plugin_dir, "Hi there")
    third = _up(sysops, plugin_dir)
    assert "claiming spare instance" not in third and "starting hello 1.0.0 (revision 4)" in third, third
    assert sysops.ok("greet", "World").strip() == "Hi there, World!"
    assert len(_containers(engine, sysops)[1]) == 1

    # A save whose initialize() raises is rolled back: the previous code keeps serving.
    source = plugin_dir / "hello_plugin" / "plugin.py"
    good = source.read_text()
    source.write_text(good.replace("self.greeted = 0", "raise RuntimeError('broken on purpose')"))
    failed = sysops.run("plugin", "up", str(plugin_dir), "--dev")
    assert failed.returncode != 0 and "broken on purpose" in failed.stderr
    assert sysops.ok("greet", "World").strip() == "Hi there, World!"
    source.write_text(good)

    # Each revision keeps its own code: a rollback runs revision 1's.
    sysops.ok("plugin", "rollback", "hello", "--to", "1")
    assert sysops.ok("greet", "World").strip() == "Hello, World!"

    # Out of development mode: the image is built with the code, and the spare goes.
    production = _up_production(sysops, plugin_dir)
    assert "building image" in production and "claiming" not in production
    assert _containers(engine, sysops)[1] == []
    assert sysops.ok("greet", "World").strip() == "Hi there, World!"

    sysops.ok("plugin", "down", "hello", "--purge")
    assert installation_containers(engine, sysops.installation_id) == []
    assert not (sysops.home / "dev" / "hello").exists()


def test_a_manifest_change_builds_and_replaces_the_spare(
    fresh_sysops: Sysops, engine: docker.DockerClient, tmp_path: Path
) -> None:
    sysops = fresh_sysops
    plugin_dir = copy_example("hello", tmp_path)
    _up(sysops, plugin_dir)
    _, spares = _containers(engine, sysops)
    manifest = plugin_dir / "plugin.yaml"
    manifest.write_text(manifest.read_text().replace("memory_mb: 128", "memory_mb: 160"))
    changed = _up(sysops, plugin_dir)
    assert "building image" in changed and "claiming spare instance" not in changed, changed
    _, new_spares = _containers(engine, sysops)
    assert len(new_spares) == 1 and new_spares != spares, "the spare of the old manifest was kept"
    for handle in [*_claimed(engine, sysops), *new_spares]:
        assert engine.containers.get(handle).attrs["HostConfig"]["Memory"] == 160 * 1024 * 1024
