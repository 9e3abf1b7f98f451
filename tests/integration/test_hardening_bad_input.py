"""The real `sysops` CLI fed hostile arguments and plugin directories, against the real engine.

Property: the exit code is in the documented set for the command, stderr has exactly one `error:` line
and no traceback, and nothing is left behind: no container, image or volume of this installation, no file
outside its SYSOPS_HOME, none in it but sysops's bookkeeping, none in the process's temporary directory
(tests/fuzz_properties.py). Example counts are small: each example is a process start.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import docker
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz_properties import assert_clean_error, assert_exit_code, assert_nothing_left, files_under, fuzz_settings
from tests.integration.conftest import SYSOPS, Sysops, installation_containers, plugin_code, write_plugin

pytestmark = pytest.mark.integration
CPU_6400 = "limits: {cpu_percent: 6400}\n"
CLI_FUZZ = fuzz_settings(12)
# argv cannot hold NUL; any other byte reaches sysops (undecodable ones as surrogates).
argv_words = st.binary(min_size=0, max_size=80).map(lambda raw: os.fsdecode(raw.replace(b"\0", b""))) | st.sampled_from(
    ["/srv/app/poetry", "../../x", "Demo", "demo\n", "a" * 64, "x" * 5000, "\udcff", "-", "."]
)
manifests = st.sampled_from(
    [
        b"name: demo\nversion: 1.0.0\nentrypoint: demo.plugin:Demo\n",
        b"name: demo\nversion: 1.0.0\nentrypoint: demo.plugin:Demo\nlimits: {cpu_percent: true}\n",
        b"name: demo\nversion: 1.0.0\nentrypoint: " + b"a" * 1000 + b":B\n",
        b"name: demo\nversion: 1.0.0\nentrypoint: demo.plugin:Demo\nnetwork: [{host: 0x7f.1}]\n",
        b"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
        "name: demo\n".encode("utf-16"),
        b"\xff\xfe\x00binary",
        b"x: " + b"[" * 3000,
    ]
) | st.binary(max_size=200)


def _run(sysops: Sysops, *args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the CLI with its own temporary directory (`cwd/tmp`), which must stay empty."""
    (cwd / "tmp").mkdir(exist_ok=True)
    return subprocess.run(
        [SYSOPS, *args],
        env={**sysops.env, "TMPDIR": str(cwd / "tmp")},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _assert_clean(result: subprocess.CompletedProcess[str], codes: set[int]) -> None:
    assert_exit_code(result.returncode, codes)
    assert_clean_error(result.stderr, only_line=False)  # `plugin up` prints progress lines first


def _left_behind(engine: docker.DockerClient, sysops: Sysops) -> list[str]:
    label = f"sysops.installation={sysops.installation_id}"
    return [
        *(c.name for c in installation_containers(engine, sysops.installation_id)),
        *(i.id for i in engine.images.list(filters={"label": label})),
        *(v.name for v in engine.volumes.list() if v.name.startswith(f"sysops-{sysops.installation_id}-")),
    ]


@pytest.fixture(scope="module")
def workdir(sysops: Sysops) -> Path:
    """The directory commands run in (cwd), next to SYSOPS_HOME; nothing may appear in it."""
    path = sysops.home.parent / "cwd"
    (path / "tmp").mkdir(parents=True, exist_ok=True)
    sysops.ok("plugin", "ls")  # the resident host and its files exist before anything is compared
    return path


def _files(root: Path, home: Path) -> set[Path]:
    return {path for path in root.rglob("*") if home not in path.parents and path != home}


@CLI_FUZZ
@given(command=st.sampled_from(["status", "down", "history", "logs", "rollback"]), name=argv_words)
def test_plugin_name_arguments(
    sysops: Sysops, engine: docker.DockerClient, workdir: Path, command: str, name: str
) -> None:
    root = sysops.home.parent
    before, in_home = _files(root, sysops.home), files_under(sysops.home)
    result = _run(sysops, "plugin", command, "--", name, cwd=workdir)
    _assert_clean(result, {2, 8})
    assert _files(root, sysops.home) == before
    assert_nothing_left(sysops.home, in_home, workdir / "tmp")  # no lock file of a plugin that does not exist
    assert _left_behind(engine, sysops) == []


@CLI_FUZZ
@given(content=manifests)
def test_plugin_up_of_hostile_directories(
    sysops: Sysops, engine: docker.DockerClient, workdir: Path, content: bytes
) -> None:
    plugin = workdir / "plugin"
    plugin.mkdir(exist_ok=True)
    (plugin / "plugin.yaml").write_bytes(content)
    before = files_under(sysops.home)
    result = _run(sysops, "plugin", "up", str(plugin), cwd=workdir)
    _assert_clean(result, {4})
    assert_nothing_left(sysops.home, before, workdir / "tmp")
    assert _left_behind(engine, sysops) == []


@CLI_FUZZ
@given(path=argv_words)
def test_plugin_up_of_hostile_paths(sysops: Sysops, engine: docker.DockerClient, workdir: Path, path: str) -> None:
    before = files_under(sysops.home)
    result = _run(sysops, "plugin", "up", "--", path, cwd=workdir)
    _assert_clean(result, {4, 8})  # 8: a word that is a plugin name no discovery knows (`plugin up NAME`)
    assert_nothing_left(sysops.home, before, workdir / "tmp")
    assert _left_behind(engine, sysops) == []


def test_down_of_a_path_does_not_truncate_it(sysops: Sysops, tmp_path: Path) -> None:
    victim = tmp_path / "poetry.lock"
    victim.write_text("precious\n")
    result = sysops.run("plugin", "down", str(tmp_path / "poetry"))
    _assert_clean(result, {2})
    assert "invalid plugin name" in result.stderr
    assert victim.read_text() == "precious\n"


@pytest.mark.skipif((os.cpu_count() or 1) >= 64, reason="needs an engine with fewer than 64 CPUs")
def test_cpu_above_the_engine_names_the_key(fresh_sysops: Sysops, tmp_path: Path, engine: docker.DockerClient) -> None:
    plugin = write_plugin(tmp_path / "p", name="greedy", code=plugin_code("greedy"), manifest_extra=CPU_6400)
    result = _run(fresh_sysops, "plugin", "up", str(plugin), cwd=tmp_path, timeout=240)
    _assert_clean(result, {4})
    assert "limits.cpu_percent 6400 is more than the engine's" in result.stderr
    assert _left_behind(engine, fresh_sysops) == []
