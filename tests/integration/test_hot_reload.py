"""Hot reload on the real engine: rolls under load with zero failed calls, rollbacks, interrupted rolls."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest

from tests.integration.conftest import SYSOPS, Sysops, copy_example, installation_containers, wait_for, watch_session

pytestmark = pytest.mark.integration

GREETING = 'f"{greeting.capitalize()}, {name}!"'


def _set_greeting(plugin_dir: Path, text: str) -> None:
    source = plugin_dir / "hello_plugin" / "plugin.py"
    code = source.read_text()
    start = code.index('text = " ".join([') + len('text = " ".join([')
    end = code.index("] * times)", start)
    source.write_text(code[:start] + f'f"{text}, {{name}}!"' + code[end:])


def _containers(engine: docker.DockerClient, sysops: Sysops) -> list[docker.models.containers.Container]:
    return installation_containers(engine, sysops.installation_id)


@dataclass
class LoadLoop:
    """Clients calling `sysops greet World` in parallel, recording every answer and failure."""

    sysops: Sysops
    clients: int = 3
    answers: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        deadline = time.monotonic() + 240  # bounded even if the test forgets to stop it
        while not self._stop.is_set() and time.monotonic() < deadline:
            result = self.sysops.run("greet", "World", timeout=30)
            if result.returncode == 0:
                self.answers.append(result.stdout.strip())
            else:
                self.failures.append(result.stderr.strip())

    def __enter__(self) -> LoadLoop:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=40)

    def latest(self) -> str:
        return self.answers[-1] if self.answers else ""


@pytest.fixture
def watched(fresh_sysops: Sysops, tmp_path: Path) -> Iterator[tuple[Sysops, Path, Path]]:
    plugin_dir = copy_example("hello", tmp_path)
    log = tmp_path / "watch.log"
    with watch_session(fresh_sysops, plugin_dir, log):
        yield fresh_sysops, plugin_dir, log


def test_saves_roll_under_load_with_zero_failed_calls(
    watched: tuple[Sysops, Path, Path], engine: docker.DockerClient
) -> None:
    sysops, plugin_dir, log = watched
    with LoadLoop(sysops) as load:
        wait_for(lambda: len(load.answers) >= 3, 30, "the first answers")
        for version in ("Howdy", "Greetings", "Ahoy"):
            _set_greeting(plugin_dir, version)
            wait_for(lambda version=version: load.latest().startswith(version), 60, f"{version!r} to answer")
            time.sleep(0.5)
    assert load.failures == []
    seen = list(dict.fromkeys(answer.split(",")[0] for answer in load.answers))
    assert seen == ["Hello", "Howdy", "Greetings", "Ahoy"]
    assert len(_containers(engine, sysops)) == 1
    assert log.read_text().count("serving (revision") == 3
    history = json.loads(sysops.ok("plugin", "history", "hello", "--output", "json"))
    assert [r["revision"] for r in history] == [1, 2, 3, 4]


def test_state_is_handed_to_the_new_version(watched: tuple[Sysops, Path, Path], engine: docker.DockerClient) -> None:
    sysops, plugin_dir, _ = watched
    for _ in range(3):
        sysops.ok("greet", "World")
    before = _containers(engine, sysops)[0].id
    _set_greeting(plugin_dir, "Hiya")
    wait_for(lambda: sysops.ok("greet", "World").startswith("Hiya"), 60, "the new version")
    assert _containers(engine, sysops)[0].id != before
    # three calls on the old version, plus the probes on the new one: the count was carried over
    assert json.loads(sysops.ok("info", "--output", "json"))["greeted"] >= 4


@pytest.mark.parametrize(
    ("breakage", "reported"),
    [
        ("initialize", "initialize() of plugin 'hello' failed: RuntimeError: no database"),
        ("syntax", "SyntaxError"),
        ("never-ready", "was not ready within 3s"),
    ],
)
def test_broken_saves_roll_back_and_the_watch_goes_on(
    watched: tuple[Sysops, Path, Path], engine: docker.DockerClient, breakage: str, reported: str
) -> None:
    sysops, plugin_dir, log = watched
    source = plugin_dir / "hello_plugin" / "plugin.py"
    good = source.read_text()
    manifest = plugin_dir / "plugin.yaml"
    with LoadLoop(sysops, clients=2) as load:
        wait_for(lambda: len(load.answers) >= 2, 30, "the first answers")
        if breakage == "initialize":
            source.write_text(good.replace("self.greeted = 0", "raise RuntimeError('no database')"))
        elif breakage == "syntax":
            source.write_text(good + "\ndef broken(:\n")
        else:
            manifest.write_text(manifest.read_text() + "readiness: {timeout_seconds: 3}\n")
            source.write_text(good.replace("self.greeted = 0", "import time; time.sleep(60)"))
        wait_for(lambda: "reload failed" in log.read_text(), 90, "the failed reload to be reported")
        answers_at_failure = len(load.answers)
        wait_for(lambda: len(load.answers) > answers_at_failure + 2, 30, "answers after the failure")
    assert reported in log.read_text()
    assert load.failures == []
    assert {answer for answer in load.answers} == {"Hello, World!"}
    assert len(_containers(engine, sysops)) == 1
    status = json.loads(sysops.ok("plugin", "status", "hello", "--output", "json"))
    assert status["state"] == "Active" and status["revision"] == 1
    if breakage != "syntax":  # a syntax error is caught before anything starts
        assert status["events"][-1]["kind"] == "rolled-back"
    # the watch goes on: the next good save rolls
    source.write_text(good.replace('f"{greeting.capitalize()}, {name}!"', 'f"{greeting.capitalize()} again, {name}!"'))
    wait_for(lambda: sysops.ok("greet", "World") == "Hello again, World!\n", 60, "the fixed version")


def test_interrupted_roll_leaves_one_serving_version(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    plugin_dir = copy_example("hello", tmp_path)
    fresh_sysops.ok("plugin", "up", str(plugin_dir))
    source = plugin_dir / "hello_plugin" / "plugin.py"
    source.write_text(source.read_text().replace("self.greeted = 0", "import time; time.sleep(60)"))
    process = subprocess.Popen(
        [SYSOPS, "plugin", "up", str(plugin_dir)], env=fresh_sysops.env, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: len(_containers(engine, fresh_sysops)) == 2, 60, "the new instance to start")
    finally:
        process.kill()
        process.wait()
    # The roll goes on in the resident host without its CLI: the old version serves meanwhile, and the new
    # instance, never ready, is removed at the readiness timeout (20 s here) as in any failed roll.
    assert fresh_sysops.ok("greet", "World") == "Hello, World!\n"
    wait_for(lambda: len(_containers(engine, fresh_sysops)) == 1, 60, "the never-ready instance to be removed")
    listed = json.loads(fresh_sysops.ok("plugin", "ls", "--output", "json"))
    assert [(p["name"], p["state"], p["revision"]) for p in listed] == [("hello", "Active", 1)]
    assert fresh_sysops.ok("greet", "World") == "Hello, World!\n"


def test_history_and_rollback_without_rebuilding(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    plugin_dir = copy_example("hello", tmp_path)
    fresh_sysops.ok("plugin", "up", str(plugin_dir))
    _set_greeting(plugin_dir, "Version two")
    fresh_sysops.ok("plugin", "up", str(plugin_dir))
    _set_greeting(plugin_dir, "Version three")
    fresh_sysops.ok("plugin", "up", str(plugin_dir))
    assert fresh_sysops.ok("greet", "X") == "Version three, X!\n"
    history = json.loads(fresh_sysops.ok("plugin", "history", "hello", "--output", "json"))
    assert [r["revision"] for r in history] == [1, 2, 3]
    rolled = fresh_sysops.run("plugin", "rollback", "hello")
    assert rolled.returncode == 0 and "building" not in rolled.stderr
    assert fresh_sysops.ok("greet", "X") == "Version two, X!\n"
    fresh_sysops.ok("plugin", "rollback", "hello", "--to", "1")
    assert fresh_sysops.ok("greet", "X") == "Hello, X!\n"
    assert len(_containers(engine, fresh_sysops)) == 1
    missing = fresh_sysops.run("plugin", "rollback", "hello", "--to", "9")
    assert missing.returncode == 8 and "has no revision 9" in missing.stderr
    images = engine.images.list(filters={"label": f"sysops.installation={fresh_sysops.installation_id}"})
    assert len(images) == 3  # one per revision, none rebuilt


def test_replicas_serve_together_and_roll_one_by_one(
    fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient
) -> None:
    plugin_dir = copy_example("hello", tmp_path)
    manifest = plugin_dir / "plugin.yaml"
    manifest.write_text(manifest.read_text() + "replicas: 2\n")
    fresh_sysops.ok("plugin", "up", str(plugin_dir))
    assert len(_containers(engine, fresh_sysops)) == 2
    assert json.loads(fresh_sysops.ok("plugin", "status", "hello", "--output", "json"))["replicas"] == "2/2"
    with LoadLoop(fresh_sysops, clients=2) as load:
        wait_for(lambda: len(load.answers) >= 2, 30, "the first answers")
        _set_greeting(plugin_dir, "Salut")
        rolled = fresh_sysops.run("plugin", "up", str(plugin_dir))
        assert rolled.returncode == 0, rolled.stderr
        assert rolled.stderr.count("waiting for hello 1.0.0 to be ready") == 2
        wait_for(lambda: load.latest().startswith("Salut"), 30, "the new version")
    assert load.failures == []
    after = _containers(engine, fresh_sysops)
    assert len(after) == 2 and {c.labels["sysops.revision"] for c in after} == {"2"}
