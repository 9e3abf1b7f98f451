"""The test kit's in-process mode: the plugin under test imported into the test process, on a FakeHost.

Fast (no image, no container): `invoke` runs the command through the same PluginRuntime the plugin server
uses, `publish` runs the plugin's `@on_event` handlers, and `host` is the FakeHost whose config, state, alerts
and metrics the test reads and sets. The host's config starts from plugin.yaml's defaults, as on the real host.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from sysops_sdk._kit_manifest import KitError, KitManifest
from sysops_sdk._server import EntrypointError, load_plugin_class
from sysops_sdk._types import TYPES_ENV
from sysops_sdk.testing import FakeHost, InvocationResult, PluginHarness

#: The exit code of a command line the CLI refuses (unknown option, too many arguments), as click gives it.
EXIT_USAGE = 2


class InProcessPlugin:
    """The plugin under test, run in the test process: the `plugin` fixture in mode `inprocess`."""

    mode = "inprocess"

    def __init__(self, manifest: KitManifest) -> None:
        self.manifest = manifest
        self.name = manifest.name
        #: The faked host services; set `host.config[...]`, read `host.alerts`, `host.state`, `host.published`.
        self.host = FakeHost(config=manifest.config, section=manifest.section)
        plugin_class = _load(manifest)
        previous = os.environ.get(TYPES_ENV)
        os.environ[TYPES_ENV] = ",".join(manifest.types)  # the class must agree with plugin.yaml's types
        try:
            self.harness = PluginHarness(plugin_class, services=self.host.services())
        except Exception as exc:
            raise KitError(
                f"{manifest.directory / 'plugin.yaml'}: plugin {manifest.name} does not start: {exc}"
            ) from exc
        finally:
            if previous is None:
                os.environ.pop(TYPES_ENV, None)
            else:
                os.environ[TYPES_ENV] = previous

    @property
    def instance(self) -> Any:
        """The plugin object itself (in-process mode only), e.g. to call a service plugin's run() by hand."""
        return self.harness.plugin

    def invoke(self, command: str, *arguments: Any, **options: Any) -> InvocationResult:
        """Run `command` with its positional arguments in order and its options by Python name."""
        definition = self.harness.runtime.commands.get(command)
        if definition is None:
            return self.harness.invoke(command)  # the runtime answers an unknown command (exit 2)
        positional = [param.name for param in definition.params if param.kind == "argument"]
        if len(arguments) > len(positional):
            return _refused(f"{command}: got {len(arguments)} arguments, it takes {len(positional)}")
        known = {param.name for param in definition.params if param.kind == "option"}
        if unknown := sorted(set(options) - known):
            return _refused(f"{command}: no such option {', '.join(unknown)} (it has {', '.join(sorted(known))})")
        return self.harness.invoke(command, **dict(zip(positional, arguments, strict=False)), **options)

    def publish(self, topic: str, payload: Any = None) -> None:
        """Deliver one event to the plugin's `@on_event` handlers; a failing handler fails the test."""
        self.harness.deliver(topic, payload)

    def metric(self, name: str, **labels: str) -> float | None:
        """The value the plugin reported for metric `name` with exactly `labels` (None: never reported)."""
        return self.host.metric_value(name, **labels)

    def close(self) -> None:
        """Run the plugin's cleanup()."""
        self.harness.close()


def _load(manifest: KitManifest) -> type[Any]:
    """Import the plugin class, its directory first on sys.path (the plugin need not be pip-installed)."""
    directory = str(manifest.directory)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        return load_plugin_class(manifest.entrypoint)
    except EntrypointError as exc:
        raise KitError(f"{manifest.directory / 'plugin.yaml'}: {exc}") from exc


def _refused(message: str) -> InvocationResult:
    return InvocationResult(exit_code=EXIT_USAGE, error=message)
