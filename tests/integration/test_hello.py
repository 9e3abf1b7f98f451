"""The walking skeleton on the real engine: build, run, route, inspect, re-adopt, replace, remove."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import docker
import pytest
from sysops.runtime.base import plugin_uid

from tests.integration.conftest import SYSOPS, Sysops, copy_example, installation_containers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hello(sysops: Sysops, tmp_path_factory: pytest.TempPathFactory) -> Path:
    plugin_dir = copy_example("hello", tmp_path_factory.mktemp("plugins"))
    result = sysops.run("plugin", "up", str(plugin_dir))
    assert result.returncode == 0, result.stderr
    assert "building image" in result.stderr and "ready" in result.stderr
    return plugin_dir


def _container(engine: docker.DockerClient, sysops: Sysops) -> docker.models.containers.Container:
    containers = installation_containers(engine, sysops.installation_id, running_only=True)
    assert len(containers) == 1, [c.name for c in containers]
    return containers[0]


def test_greet_runs_in_the_container(sysops: Sysops, hello: Path) -> None:
    assert sysops.ok("greet", "World") == "Hello, World!\n"
    assert sysops.ok("greet", "World", "--shout", "--times", "2", "--greeting", "hi") == "HI, WORLD! HI, WORLD!\n"


def test_bad_option_values_are_usage_errors(sysops: Sysops, hello: Path) -> None:
    result = sysops.run("greet", "World", "--greeting", "yo")
    assert result.returncode == 2
    assert "'yo' is not one of 'hello', 'hi', 'hey'" in result.stderr
    result = sysops.run("greet", "World", "--times", "many")
    assert result.returncode == 2 and "'many' is not a valid integer" in result.stderr


def test_help_lists_plugin_commands_and_their_parameters(sysops: Sysops, hello: Path) -> None:
    top = sysops.ok("--help")
    assert "greet" in top and "Greet someone by name." in top and "plugin" in top
    greet = sysops.ok("greet", "--help")
    for text in ("NAME", "Who to greet", "--greeting", "[hello|hi|hey]", "--times", "--shout", "Greet in capitals"):
        assert text in greet


def test_results_as_table_json_stream_and_dependency(sysops: Sysops, hello: Path) -> None:
    table = sysops.ok("info").splitlines()
    assert table[0].split() == ["KEY", "VALUE"] and table[1].split() == ["plugin", "hello"]
    assert json.loads(sysops.ok("info", "--output", "json"))["version"] == "1.0.0"
    assert sysops.ok("size", "123456789") == "123.5 MB\n"  # humanize, a third-party requirement


def test_generator_output_is_streamed(sysops: Sysops, hello: Path) -> None:
    started = time.monotonic()
    process = subprocess.Popen(
        [SYSOPS, "count", "--to", "3", "--delay", "0.6"], env=sysops.env, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    first_at = time.monotonic() - started
    rest = process.stdout.read()
    assert process.wait(timeout=30) == 0
    assert (first + rest).split() == ["1", "2", "3"]
    assert first_at < time.monotonic() - started - 0.9, "the first line came only with the last"


def test_exception_is_one_line_error(sysops: Sysops, hello: Path) -> None:
    result = sysops.run("fail", "disk full")
    assert result.returncode == 1
    assert result.stderr == "error: hello: fail: disk full\n"
    assert result.stdout == ""


def test_unknown_command_suggests(sysops: Sysops, hello: Path) -> None:
    result = sysops.run("gret", "x")
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown command 'gret' (did you mean 'greet'?)")


def test_ls_status_logs(sysops: Sysops, hello: Path, engine: docker.DockerClient) -> None:
    container = _container(engine, sysops)
    table = sysops.ok("plugin", "ls").splitlines()
    assert table[0].split()[:4] == ["NAME", "STATE", "VERSION", "REVISION"]
    assert table[1].split()[:6] == ["hello", "Active", "1.0.0", "1", "1/1", "SERVING"]
    [listed] = json.loads(sysops.ok("plugin", "ls", "--output", "json"))
    assert listed["container"] == container.id[:12] and "greet" in listed["commands"]
    status = json.loads(sysops.ok("plugin", "status", "hello", "--output", "json"))
    assert status["state"] == "Active" and status["health"] == "SERVING"
    assert status["image_digest"] == container.image.id
    assert [e["kind"] for e in status["events"]][-1] == "active"
    text = sysops.ok("plugin", "status", "hello")
    assert "state         Active" in text and "last error    -" in text
    assert "hello 1.0.0 serving on unix:///run/sysops/plugin.sock" in sysops.ok("plugin", "logs", "hello")


def test_logs_follow_streams_until_interrupted(sysops: Sysops, hello: Path) -> None:
    process = subprocess.Popen(
        [SYSOPS, "plugin", "logs", "hello", "-f"], env=sysops.env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert "serving on" in process.stdout.readline()
        time.sleep(0.5)
        assert process.poll() is None, "--follow must keep running"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_container_is_hardened_labelled_and_limited(sysops: Sysops, hello: Path, engine: docker.DockerClient) -> None:
    attrs = _container(engine, sysops).attrs
    config, host = attrs["Config"], attrs["HostConfig"]
    uid = plugin_uid(sysops.installation_id, "hello")
    assert config["User"] == f"{uid}:{uid}"  # the plugin's own uid, not the shared 10001 of the image
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["NetworkMode"] == "none"
    assert host["Memory"] == host["MemorySwap"] == 128 * 1024 * 1024
    assert (host["CpuPeriod"], host["CpuQuota"], host["PidsLimit"]) == (300_000, 150_000, 64)  # cpu_percent 50
    assert not any("docker.sock" in (m.get("Source") or "") for m in attrs["Mounts"])
    labels = config["Labels"]
    assert labels["sysops.plugin"] == "hello" and labels["sysops.version"] == "1.0.0"
    assert labels["sysops.revision"] == "1" and labels["sysops.installation"] == sysops.installation_id


def test_routed_command_does_not_import_engine_clients(sysops: Sysops, hello: Path) -> None:
    code = (
        "import sys; from sysops.cli.main import main; code = main(['greet', 'X']); "
        "assert code == 0; bad = {'docker', 'kubernetes', 'pydantic', 'typer', 'grpc', 'google.protobuf'} "
        "& set(sys.modules); "
        "assert not bad, bad"
    )
    result = subprocess.run([SYSOPS.replace("sysops", "python"), "-c", code], env=sysops.env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


def test_up_again_reuses_and_a_change_replaces(sysops: Sysops, hello: Path, engine: docker.DockerClient) -> None:
    before = _container(engine, sysops).id
    again = sysops.run("plugin", "up", str(hello))
    assert again.returncode == 0 and "up to date" in again.stderr
    assert _container(engine, sysops).id == before
    source = hello / "hello_plugin" / "plugin.py"
    source.write_text(
        source.read_text().replace('f"{greeting.capitalize()}, {name}!"', 'f"{greeting.capitalize()} there, {name}!"')
    )
    changed = sysops.run("plugin", "up", str(hello))
    assert changed.returncode == 0, changed.stderr
    assert "Using cache" in changed.stderr  # the dependency layer was reused
    after = _container(engine, sysops)
    assert after.id != before and after.labels["sysops.revision"] == "2"
    assert sysops.ok("greet", "World") == "Hello there, World!\n"
    history = json.loads(sysops.ok("plugin", "history", "hello", "--output", "json"))
    assert [r["revision"] for r in history] == [1, 2]


def test_state_is_re_adopted_when_the_store_is_lost(sysops: Sysops, hello: Path, engine: docker.DockerClient) -> None:
    running = _container(engine, sysops).id
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (sysops.home / name).unlink(missing_ok=True)
    listed = json.loads(sysops.ok("plugin", "ls", "--output", "json"))
    assert [(p["name"], p["state"]) for p in listed] == [("hello", "Active")]
    assert _container(engine, sysops).id == running
    assert sysops.ok("greet", "again").startswith("Hello")
    again = sysops.run("plugin", "up", str(hello))
    assert again.returncode == 0 and _container(engine, sysops).id == running


def test_sigterm_stops_within_a_second(sysops: Sysops, hello: Path, engine: docker.DockerClient) -> None:
    # Run the plugin's image by hand (same hardening) and time `docker stop`.
    image = _container(engine, sysops).image
    probe = engine.containers.run(
        image.id, detach=True, network_mode="none", read_only=True, tmpfs={"/run/sysops": "uid=10001,gid=10001"},
        labels={"sysops.installation": sysops.installation_id},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while b"serving on" not in probe.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b"serving on" in probe.logs()
        started = time.monotonic()
        probe.stop(timeout=10)
        assert time.monotonic() - started < 1.5
        probe.reload()
        assert probe.attrs["State"]["ExitCode"] == 0
    finally:
        probe.remove(force=True)


def test_down_removes_everything(sysops: Sysops, hello: Path, engine: docker.DockerClient) -> None:
    sysops.ok("plugin", "down", "hello")
    label = f"sysops.installation={sysops.installation_id}"
    assert engine.containers.list(all=True, filters={"label": label}) == []
    assert json.loads(sysops.ok("plugin", "ls", "--output", "json")) == []
    result = sysops.run("greet", "World")
    assert result.returncode == 2 and "unknown command 'greet'" in result.stderr
    result = sysops.run("plugin", "status", "hello")
    assert result.returncode == 8 and result.stderr == "error: no plugin named 'hello'; `sysops plugin ls` lists them\n"
