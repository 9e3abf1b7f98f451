"""`sysops plugin install|upgrade|uninstall` and `plugin ls --outdated` from each install source, for real.

Wheels are built in the test (`pip wheel` of a tmp project that declares the `sysops.plugins` entry point
and ships plugin.yaml as package data) and served by a loopback PEP 503 "simple" index the test starts;
pip's own configuration is switched off (PIP_CONFIG_FILE=/dev/null), so no other index is reached. A git
repository with tags is installed as `git+file://...@v1`; a bare local directory is used in place; `-e`
rolls on every change.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from sysops.distribution.index_writer import IndexRepository

from tests.integration.conftest import (
    SYSOPS,
    Sysops,
    installation_containers,
    interrupt,
    plugin_code,
    wait_for,
)

pytestmark = pytest.mark.integration

DIST = "sysops-greeter"
PLUGIN = "inst-greeter"
COMMAND = "inst-greet"

#: Community plugins built here are signed by the installation's own (private-tier) key.
TRUST_LOCAL_BUILDS = """trust:
  community: {require_signature: true, signers: [official, community, private]}
  official: {require_signature: true, signers: [official, private]}
"""


def offline_pip_env() -> dict[str, str]:
    """The environment with pip's configuration (its index, find-links, constraints) switched off."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def write_plugin_dir(
    directory: Path, *, name: str, version: str, command: str, answer: str, manifest_extra: str = ""
) -> Path:
    """A plugin directory: plugin.yaml and `<name>_code/plugin.py` (class P)."""
    code = name.replace("-", "_") + "_code"
    (directory / code).mkdir(parents=True, exist_ok=True)
    (directory / code / "__init__.py").write_text("")
    (directory / code / "plugin.py").write_text(plugin_code(name, command=command, answer=answer))
    (directory / "plugin.yaml").write_text(
        f"name: {name}\nversion: {version}\nentrypoint: {code}.plugin:P\n{manifest_extra}"
    )
    return directory


def write_project(root: Path, *, version: str, manifest_extra: str = "", answer: str = "") -> Path:
    """A Python project whose package `greeter_pkg` is the plugin directory (plugin.yaml as package data)."""
    root.mkdir(parents=True, exist_ok=True)
    package = root / "greeter_pkg"
    if package.exists():
        shutil.rmtree(package)
    write_plugin_dir(package, name=PLUGIN, version=version, command=COMMAND,
                     answer=answer or f"hello from {version}", manifest_extra=manifest_extra)  # fmt: skip
    (package / "__init__.py").write_text("")
    (root / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "{DIST}"
version = "{version}"

[project.entry-points."sysops.plugins"]
{PLUGIN} = "greeter_pkg"

[tool.setuptools]
packages = ["greeter_pkg", "greeter_pkg.inst_greeter_code"]

[tool.setuptools.package-data]
greeter_pkg = ["plugin.yaml"]
"""
    )
    return root


class SimpleIndex:
    """A PEP 503 simple index on loopback serving the wheels published to it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.project = root / "simple" / DIST
        self.project.mkdir(parents=True)
        handler = functools.partial(QuietHandler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple/"

    def publish(self, build_dir: Path, *, version: str, manifest_extra: str = "") -> None:
        """Build the project at `version` into a wheel and list it in the index."""
        project = write_project(build_dir / version, version=version, manifest_extra=manifest_extra)
        wheel = ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet", "--wheel-dir"]
        command = [sys.executable, "-m", "pip", *wheel, str(self.project), str(project)]
        subprocess.run(command, env=offline_pip_env(), check=True, capture_output=True, timeout=120)
        links = "".join(f'<a href="{wheel.name}">{wheel.name}</a>\n' for wheel in sorted(self.project.glob("*.whl")))
        (self.project / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def index(tmp_path: Path) -> Iterator[SimpleIndex]:
    served = SimpleIndex(tmp_path / "index")
    yield served
    served.close()


@pytest.fixture
def installer(fresh_sysops: Sysops) -> Sysops:
    """An installation whose pip sees no configured index (only what a test passes), and whose trust policy
    accepts community plugins signed by its own key (each is built and signed here)."""
    fresh_sysops.env = {**offline_pip_env(), **{k: v for k, v in fresh_sysops.env.items() if not k.startswith("PIP_")}}
    fresh_sysops.env["PIP_CONFIG_FILE"] = os.devnull
    fresh_sysops.home.mkdir(mode=0o700, parents=True)
    (fresh_sysops.home / "policy.yaml").write_text(TRUST_LOCAL_BUILDS)
    return fresh_sysops


def installs(sysops: Sysops) -> dict[str, dict[str, str]]:
    path = sysops.home / "installs.json"
    if not path.exists():
        return {}
    assert path.stat().st_mode & 0o777 == 0o600
    return dict(json.loads(path.read_text())["installs"])


def test_pip_install_upgrade_skips_experimental_refuses_breaking_and_uninstall_leaves_nothing(
    installer: Sysops, index: SimpleIndex, tmp_path: Path, engine: docker.DockerClient
) -> None:
    builds = tmp_path / "builds"
    index.publish(builds, version="1.0.0")
    installer.ok("plugin", "install", DIST, "--index-url", index.url)
    assert installer.ok(COMMAND).strip() == "hello from 1.0.0"
    record = installs(installer)[PLUGIN]
    assert (record["kind"], record["tier"], record["version"], record["spec"]) == ("pip", "community", "1.0.0", DIST)
    assert record["directory"].startswith(str(installer.home / "packages" / DIST))
    found = json.loads(installer.ok("plugin", "discover", "-o", "json"))["found"]
    discovered = {plugin["name"]: plugin for plugin in found}
    assert discovered[PLUGIN]["source"] == f"installed package {DIST} 1.0.0"  # so `plugin up NAME` finds it
    installer.env["PIP_INDEX_URL"] = index.url  # upgrade and ls --outdated use pip's index from here on
    assert json.loads(installer.ok("plugin", "ls", "--outdated", "-o", "json")) == []

    index.publish(builds, version="1.0.5")
    index.publish(builds, version="1.1.0", manifest_extra="stage: experimental\n")
    outdated = json.loads(installer.ok("plugin", "ls", "--outdated", "-o", "json"))
    assert [(row["name"], row["installed"], row["latest"]) for row in outdated] == [(PLUGIN, "1.0.0", "1.0.5")]
    upgraded = installer.run("plugin", "upgrade", PLUGIN)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "skipped inst-greeter 1.1.0 (experimental" in upgraded.stderr
    assert installer.ok(COMMAND).strip() == "hello from 1.0.5"
    assert installs(installer)[PLUGIN]["version"] == "1.0.5"

    index.publish(builds, version="2.0.0", manifest_extra="breaking_versions: ['2.0.0']\n")
    refused = installer.run("plugin", "upgrade", PLUGIN)
    assert refused.returncode == 2, refused.stderr
    assert "crosses breaking version 2.0.0" in refused.stderr and "--allow-breaking" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert installer.ok(COMMAND).strip() == "hello from 1.0.5"  # the old version keeps serving
    assert [p.name for p in (installer.home / "packages").iterdir()] == [DIST]  # the refused candidate is gone
    installer.ok("plugin", "upgrade", PLUGIN, "--allow-breaking")
    assert installer.ok(COMMAND).strip() == "hello from 2.0.0"
    assert installer.run("plugin", "upgrade", PLUGIN, "--pre").returncode == 0  # 1.1.0 < 2.0.0: nothing newer

    installer.ok("plugin", "uninstall", PLUGIN, "--purge")
    assert installs(installer) == {}
    assert list((installer.home / "packages").iterdir()) == []
    assert installation_containers(engine, installer.installation_id) == []
    label = f"sysops.installation={installer.installation_id}"
    assert engine.images.list(filters={"label": label}) == []
    gone = installer.run("plugin", "uninstall", PLUGIN)
    assert gone.returncode == 8 and "was not installed" in gone.stderr


def test_git_install_at_a_tag(installer: Sysops, tmp_path: Path) -> None:
    repository = write_project(tmp_path / "repo", version="1.0.0", answer="from git v1")
    git = ["git", "-C", str(repository), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", str(repository)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "v1"], check=True)
    subprocess.run([*git, "tag", "v1"], check=True)
    write_project(repository, version="1.1.0", answer="from git main")
    subprocess.run([*git, "commit", "-q", "-am", "main moves on"], check=True)

    spec = f"git+file://{repository}@v1"
    installer.ok("plugin", "install", spec)
    assert installer.ok(COMMAND).strip() == "from git v1"
    record = installs(installer)[PLUGIN]
    assert (record["kind"], record["tier"], record["version"], record["spec"]) == ("git", "community", "1.0.0", spec)
    installer.ok("plugin", "uninstall", PLUGIN, "--purge")


def test_local_path_is_used_in_place_and_private(installer: Sysops, tmp_path: Path) -> None:
    directory = write_plugin_dir(tmp_path / "local", name="inst-local", version="1.0.0", command="inst-local-greet",
                                 answer="from a local path")  # fmt: skip
    installer.ok("plugin", "install", str(directory))
    assert installer.ok("inst-local-greet").strip() == "from a local path"
    record = installs(installer)["inst-local"]
    assert (record["kind"], record["tier"], record["directory"]) == ("path", "private", str(directory.resolve()))
    assert not (installer.home / "packages").exists() or list((installer.home / "packages").iterdir()) == []
    installer.ok("plugin", "uninstall", "inst-local", "--purge")
    assert directory.is_dir()  # a directory used in place is the user's: uninstall leaves it


def test_editable_install_rolls_on_change(installer: Sysops, tmp_path: Path) -> None:
    directory = write_plugin_dir(tmp_path / "edit", name="inst-edit", version="1.0.0", command="inst-edit-greet",
                                 answer="before")  # fmt: skip
    log = tmp_path / "editable.log"
    with open(log, "w") as sink:
        process = subprocess.Popen(
            [SYSOPS, "plugin", "install", "-e", str(directory)], env=installer.env, stdout=sink, stderr=sink
        )
    try:
        wait_for(lambda: "watching" in log.read_text(), 180, f"the editable install to watch ({log})")
        assert installer.ok("inst-edit-greet").strip() == "before"
        assert installs(installer)["inst-edit"]["kind"] == "editable"
        code = directory / "inst_edit_code" / "plugin.py"
        code.write_text(code.read_text().replace('"before"', '"after"'))

        def rolled() -> bool:
            result = installer.run("inst-edit-greet", timeout=60)
            return result.returncode == 0 and result.stdout.strip() == "after"

        wait_for(rolled, 120, "the editable install to roll")
    finally:
        interrupt(process, 20)
    installer.ok("plugin", "uninstall", "inst-edit", "--purge")


def test_bad_specs_are_refused_in_one_line(installer: Sysops, index: SimpleIndex) -> None:
    for args, code, words in (
        (("plugin", "install", "not a spec!!"), 2, "is not a pip requirement"),
        (("plugin", "install", "no-such-plugin-dist", "--index-url", index.url), 8, "cannot install"),
        (("plugin", "upgrade", "never-installed"), 8, "was not installed"),
    ):
        started = time.monotonic()
        result = installer.run(*args)
        assert result.returncode == code, (args, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert time.monotonic() - started < 120
    assert not any((installer.home / "packages").glob(".staging-*")) if (installer.home / "packages").exists() else True


def test_a_held_pip_upgrade_keeps_its_package_for_approve(
    installer: Sysops, index: SimpleIndex, tmp_path: Path
) -> None:
    builds = tmp_path / "builds"
    index.publish(builds, version="1.0.0", manifest_extra="permissions: [state.read]\n")
    installer.ok("plugin", "install", DIST, "--index-url", index.url)
    index.publish(builds, version="1.1.0", manifest_extra="permissions: [state.read, deployment.execute]\n")
    held = installer.run("plugin", "upgrade", PLUGIN, "--index-url", index.url)
    assert held.returncode == 9 and "is held" in held.stderr, held.stderr
    assert installer.ok(COMMAND).strip() == "hello from 1.0.0"  # the serving version keeps answering
    assert "version: 1.1.0" in (installer.home / "packages" / DIST / "greeter_pkg" / "plugin.yaml").read_text()
    installer.ok("plugin", "approve", PLUGIN, "--yes")
    assert installer.ok(COMMAND).strip() == "hello from 1.1.0"
    installer.ok("plugin", "uninstall", PLUGIN, "--purge")


def publish_index(index: SimpleIndex, versions: list[str]) -> str:
    """A TUF plugin index (`sysops index publish`) listing PLUGIN's `versions` as pip specs, served beside the
    simple index; return its URL."""
    directory = index.root / "tuf"
    directory.mkdir(exist_ok=True)
    entries = [{"version": version, "spec": f"{DIST}=={version}"} for version in versions]
    document = {"format": 1, "plugins": [{"name": PLUGIN, "description": "greets", "versions": entries}]}
    (directory / "index.json").write_text(json.dumps(document))
    return f"{index.url.removesuffix('/simple/')}/tuf/repository"


def test_a_name_an_index_lists_installs_its_spec_with_the_index_tier(
    installer: Sysops, index: SimpleIndex, tmp_path: Path
) -> None:
    builds = tmp_path / "builds"
    index.publish(builds, version="1.0.0")
    index.publish(builds, version="1.1.0")
    url = publish_index(index, ["1.0.0"])
    installer.ok("index", "publish", str(index.root / "tuf"), timeout=60)
    root = IndexRepository(index.root / "tuf").root_file
    installer.ok("index", "add", "main", url, "--root", str(root), "--tier", "official", timeout=60)

    installer.ok("plugin", "install", PLUGIN, "--index-url", index.url)  # the plugin's name, not the distribution's
    assert installer.ok(COMMAND).strip() == "hello from 1.0.0"  # the index's 1.0.0, not pip's newest 1.1.0
    record = installs(installer)[PLUGIN]
    assert (record["kind"], record["tier"], record["index"]) == ("index", "official", "main")
    assert installer.run("plugin", "upgrade", PLUGIN, "--index-url", index.url).returncode == 0
    assert installer.ok(COMMAND).strip() == "hello from 1.0.0"  # the index lists nothing newer

    publish_index(index, ["1.0.0", "1.1.0"])
    installer.ok("index", "publish", str(index.root / "tuf"), timeout=60)
    installer.ok("plugin", "upgrade", PLUGIN, "--index-url", index.url)
    assert installer.ok(COMMAND).strip() == "hello from 1.1.0"
    assert installs(installer)[PLUGIN]["tier"] == "official"
    installer.ok("plugin", "uninstall", PLUGIN, "--purge")


def test_a_local_project_is_installed_by_pip_and_upgraded_from_its_path(installer: Sysops, tmp_path: Path) -> None:
    project = write_project(tmp_path / "project", version="1.0.0")
    installer.ok("plugin", "install", str(project))
    assert installer.ok(COMMAND).strip() == "hello from 1.0.0"
    record = installs(installer)[PLUGIN]
    assert (record["kind"], record["tier"], record["spec"]) == ("path", "private", str(project.resolve()))
    assert record["directory"] == str(installer.home / "packages" / DIST / "greeter_pkg")
    write_project(project, version="1.1.0")
    installer.ok("plugin", "upgrade", PLUGIN)
    assert installer.ok(COMMAND).strip() == "hello from 1.1.0"
    installer.ok("plugin", "uninstall", PLUGIN, "--purge")
    assert not (installer.home / "packages" / DIST).exists() and project.is_dir()
