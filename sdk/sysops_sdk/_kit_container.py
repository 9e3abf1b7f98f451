"""The test kit's container mode: the plugin under test built and run in its real container by the `sysops` CLI.

Faithful where in-process is fast: the real image (requirements, read-only root, limits), the real host services
and policy, the real routing. The SDK never imports the orchestrator, so everything goes through the CLI as a
user would type it, under a private SYSOPS_HOME made for the test session, whose policy grants each plugin
what its plugin.yaml asks (unless SYSOPS_POLICY names the author's own policy): `plugin up DIR` once per plugin,
commands with `--output json`, `plugin config NAME set`, `events publish`, `metrics --plugin`; at the session's
end `plugin down NAME --purge`, `host stop`, and the private home is removed.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

from sysops_sdk._kit_manifest import KitError, KitManifest
from sysops_sdk.testing import InvocationResult

#: The sysops CLI to drive (default: `sysops` beside this Python, else on PATH).
CLI_ENV = "SYSOPS_CLI"
#: Seconds one CLI call may take (`plugin up` builds an image).
UP_TIMEOUT = 600.0
CALL_TIMEOUT = 120.0
#: The operator's policy file; when set, container mode uses it instead of granting what plugin.yaml asks.
POLICY_ENV = "SYSOPS_POLICY"

_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(?P<key>[A-Za-z_][A-Za-z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


def sysops_cli() -> str:
    """The path of the sysops CLI the kit drives."""
    configured = os.environ.get(CLI_ENV)
    beside = Path(sys.executable).with_name("sysops")
    found = configured or (str(beside) if beside.exists() else shutil.which("sysops"))
    if not found:
        raise KitError(f"container mode needs the sysops CLI: put `sysops` on PATH or set {CLI_ENV}")
    return found


class SysopsCli:
    """The sysops CLI run as a subprocess against one private SYSOPS_HOME."""

    def __init__(self) -> None:
        self.executable = sysops_cli()
        self.home = Path(tempfile.mkdtemp(prefix="sysops-kit-"))
        self.env = {**os.environ, "SYSOPS_HOME": str(self.home)}

    def run(self, *arguments: str, timeout: float = CALL_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run one CLI command, its output captured."""
        try:
            return subprocess.run(
                [self.executable, *arguments],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise KitError(f"`sysops {' '.join(arguments)}` did not finish in {timeout:.0f} s") from None

    def ok(self, *arguments: str, timeout: float = CALL_TIMEOUT) -> str:
        """Run one CLI command that must succeed; its stdout."""
        done = self.run(*arguments, timeout=timeout)
        if done.returncode != 0:
            raise KitError(f"`sysops {' '.join(arguments)}` failed (exit {done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def grant(self, plugins: dict[str, list[str]]) -> None:
        """Write the private home's policy.yaml granting each plugin its permissions (JSON is YAML)."""
        if os.environ.get(POLICY_ENV):
            return  # the author's own policy decides
        policy = {"plugins": {name: {"grants": grants} for name, grants in plugins.items()}}
        (self.home / "policy.yaml").write_text(json.dumps(policy, indent=2) + "\n", encoding="utf-8")

    def remove_home(self) -> None:
        """Stop the private installation's host and remove its home."""
        self.run("host", "stop")
        shutil.rmtree(self.home, ignore_errors=True)


class ContainerConfig(MutableMapping[str, Any]):
    """A running plugin's configuration on the real host: `config[key] = value` is `plugin config NAME set`."""

    def __init__(self, cli: SysopsCli, plugin: str) -> None:
        self._cli = cli
        self._plugin = plugin

    def _values(self) -> dict[str, Any]:
        shown = json.loads(self._cli.ok("plugin", "config", self._plugin, "--output", "json"))
        keys = shown.get("keys", shown) if isinstance(shown, dict) else shown
        if isinstance(keys, dict):
            return {key: entry.get("value") if isinstance(entry, dict) else entry for key, entry in keys.items()}
        return {entry["key"]: entry.get("value") for entry in keys}

    def __getitem__(self, key: str) -> Any:
        return self._values()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._cli.ok("plugin", "config", self._plugin, "set", key, json.dumps(value))

    def __delitem__(self, key: str) -> None:
        raise KitError("container mode cannot remove a config key; set it to another value")

    def __iter__(self) -> Iterator[str]:
        return iter(self._values())

    def __len__(self) -> int:
        return len(self._values())


class ContainerHost:
    """The real host as the container-mode `plugin.host`: its `config` can be read and set."""

    def __init__(self, cli: SysopsCli, plugin: str) -> None:
        self.config = ContainerConfig(cli, plugin)


class ContainerPlugin:
    """The plugin under test running in its container: the `plugin` fixture in mode `container`."""

    mode = "container"

    def __init__(self, cli: SysopsCli, manifest: KitManifest) -> None:
        self.name = manifest.name
        self.manifest = manifest
        self._cli = cli
        #: The private installation of this test session (e.g. `SYSOPS_HOME=... sysops plugin logs NAME`).
        self.sysops_home = cli.home
        self.host = ContainerHost(cli, manifest.name)
        cli.ok("plugin", "up", str(manifest.directory), timeout=UP_TIMEOUT)

    def invoke(self, command: str, *arguments: Any, **options: Any) -> InvocationResult:
        """Run `command` through the CLI: positional arguments, then each option as --its-name."""
        words = [*command.split(), *(str(argument) for argument in arguments)]
        for name, value in options.items():
            words.extend(_option_words(name, value))
        done = self._cli.run(*words, "--output", "json")
        return _result(done)

    def publish(self, topic: str, payload: Any = None) -> None:
        """Publish an event on the real host (delivered to the plugin's handlers asynchronously)."""
        self._cli.ok("events", "publish", topic, json.dumps(payload))

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of metric `name` with `labels` in the host's Prometheus text for this plugin."""
        text = self._cli.ok("metrics", "--plugin", self.name)
        return metric_value(text, name, labels)

    def down(self) -> None:
        """Take the plugin down and remove its images and data volume."""
        self._cli.run("plugin", "down", self.name, "--purge", timeout=UP_TIMEOUT)


class ContainerDeployments:
    """The plugins brought up in container mode during one test session, under one private SYSOPS_HOME."""

    def __init__(self) -> None:
        self._cli: SysopsCli | None = None
        self._running: dict[Path, ContainerPlugin] = {}
        self._grants: dict[str, list[str]] = {}
        #: Plugins that did not come up: every later test of theirs fails at once with the same reason.
        self._failed: dict[Path, KitError] = {}

    def plugin(self, manifest: KitManifest) -> ContainerPlugin:
        """The running plugin of `manifest`, brought up at its first use in the session."""
        if self._cli is None:
            self._cli = SysopsCli()
        if manifest.directory in self._failed:
            raise self._failed[manifest.directory]
        if manifest.directory not in self._running:
            self._grants[manifest.name] = list(manifest.permissions)
            self._cli.grant(self._grants)
            try:
                self._running[manifest.directory] = ContainerPlugin(self._cli, manifest)
            except KitError as exc:
                self._failed[manifest.directory] = exc
                raise
        return self._running[manifest.directory]

    def close(self) -> None:
        """Take down every plugin this session brought up, stop the host and remove the private home."""
        for running in self._running.values():
            running.down()
        self._running.clear()
        if self._cli is not None:
            self._cli.remove_home()


def _option_words(name: str, value: Any) -> list[str]:
    """The command-line words of one option: a flag when True, nothing when False, repeated for a list."""
    flag = "--" + name.replace("_", "-")
    if value is True:
        return [flag]
    if value is False or value is None:
        return []
    if isinstance(value, list | tuple):
        return [word for item in value for word in (flag, str(item))]
    return [flag, str(value)]


def _result(done: subprocess.CompletedProcess[str]) -> InvocationResult:
    """What the CLI printed, as an InvocationResult (a JSON object or list on stdout is the data)."""
    text = done.stdout[:-1] if done.stdout.endswith("\n") else done.stdout
    result = InvocationResult(lines=text.splitlines(), text=text, exit_code=done.returncode)
    if done.returncode != 0:
        result.error = done.stderr.strip().removeprefix("error: ")
    try:
        parsed = json.loads(text)
    except ValueError:
        return result
    if isinstance(parsed, dict | list):
        result.data, result.text, result.lines = parsed, "", []
    return result


def metric_value(text: str, name: str, labels: dict[str, str]) -> float | None:
    """The value of sample `name` (or `<name>_total`, and either under the host's `sysops_plugin_` prefix) whose
    labels include `labels`, in Prometheus text."""
    for line in text.splitlines():
        sample = _SAMPLE.match(line)
        if sample is None or line.startswith("#"):
            continue
        if sample["name"] not in (name, f"{name}_total", f"sysops_plugin_{name}", f"sysops_plugin_{name}_total"):
            continue
        found = {match["key"]: match["value"] for match in _LABEL.finditer(sample["labels"] or "")}
        if all(found.get(key) == value for key, value in labels.items()):
            value = float(sample["value"])
            return None if math.isnan(value) else value
    return None
