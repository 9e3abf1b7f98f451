"""Rolling replacement of a plugin's instance, with automatic rollback when the new one is not ready.

The sequence: start the new instance beside the old one, wait for gRPC readiness (health SERVING and a
successful Describe), check its commands against every other plugin's, hand state over (Snapshot from
the old, Restore into the new), switch routing in one store transaction, then drain and stop the old
instance. Any failure before the switch removes the new instance and leaves the old one serving.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sysops.core.client import InvocationResult, PluginClient
from sysops.core.manifest import EgressRule, Manifest
from sysops.errors import CommandConflictError, StartFailedError, SysopsError
from sysops.runtime.base import (
    LABEL_FINGERPRINT,
    LABEL_INSTALLATION,
    LABEL_INSTANCE,
    LABEL_PLUGIN,
    LABEL_REVISION,
    LABEL_VERSION,
    EgressAllowance,
    InstanceSpec,
    InstanceStatus,
    ResourceLimits,
    RuntimeDriver,
)
from sysops.settings import Settings
from sysops.store import InstanceRecord, RevisionRecord, Store

#: Exit codes of the plugin server (sysops_sdk._server) and what they mean for a user.
_EXIT_REASONS = {3: "entrypoint failed to load", 4: "initialize() failed", 5: "cannot serve", 137: "killed"}
_POLL_SECONDS = 0.03
#: Top-level names that belong to sysops itself.
RESERVED_COMMANDS = frozenset({"plugin", "serve", "help", "version"})

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RollTarget:
    """What to roll to: an image, the manifest it was built from, and the build's fingerprint."""

    manifest: Manifest
    image: str
    image_id: str
    fingerprint: str
    source: str


def egress_rules(manifest: Manifest) -> list[EgressRule]:
    """The manifest's egress allow-list ('none' is the empty list)."""
    return [] if manifest.network == "none" else list(manifest.network)


def limits_for(manifest: Manifest) -> ResourceLimits:
    """Translate manifest limits into engine units."""
    limits = manifest.limits
    return ResourceLimits(
        nano_cpus=int(limits.cpu_percent * 10_000_000),
        memory_bytes=limits.memory_mb * 1024 * 1024,
        pids=limits.pids,
        io_bytes_per_sec=int(limits.disk_io_mb_per_sec * 1024 * 1024) if limits.disk_io_mb_per_sec else None,
        network_connections=limits.network_connections,
    )


def summarize_log(lines: list[str]) -> list[str]:
    """Shorten Python tracebacks in plugin logs to the frames of the plugin's own code."""
    summary: list[str] = []
    in_frame = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("Traceback (most recent call last)") or (stripped and set(stripped) <= set("^~ ")):
            continue
        if stripped.startswith('File "'):
            in_frame = True
            if "sysops_sdk" not in stripped and "<frozen" not in stripped:
                summary.append("at " + stripped.removeprefix("File ").replace('"', ""))
            continue
        if in_frame and line.startswith("    "):
            continue
        in_frame = False
        summary.append(line)
    return summary


class Rollout:
    """Starts instances, waits for readiness, switches routes, and stops what is replaced."""

    def __init__(self, settings: Settings, store: Store, driver: RuntimeDriver, progress: Progress) -> None:
        self.settings = settings
        self.store = store
        self.driver = driver
        self.progress = progress

    def data_volume(self, plugin: str) -> str:
        """Name of the plugin's persistent data volume."""
        return f"sysops-{self.settings.installation_id}-{plugin}-data"

    def roll(self, target: RollTarget, *, rollback_of: int | None = None) -> InstanceRecord:
        """Bring `target` into service replica by replica, or raise with the previous version serving.

        Each slot is replaced in turn: start a new instance, wait until it is ready, hand state over, switch
        it into routing in place of one old instance, drain and stop that one; so never fewer than
        `replicas` instances are ready. If a new instance fails, it is removed, and slots already replaced
        are rolled back to the previous version the same way.
        """
        manifest = target.manifest
        name = manifest.name
        olds = self.store.active_instances(name)
        revision = rollback_of or self.store.next_revision(name)
        self.store.save_plugin(name, target.source, self.driver.name, manifest.model_dump(mode="json"))
        self.store.add_event(name, "reload-started" if olds else "loading", f"{manifest.version} (revision {revision})")
        news: list[InstanceRecord] = []
        try:
            for slot in range(manifest.replicas):
                old = olds[slot] if slot < len(olds) else None
                news.append(self._replace(target, revision, old, state_from=old or (olds[0] if olds else None)))
        except BaseException as exc:
            reason = str(exc) if isinstance(exc, SysopsError) else f"interrupted ({type(exc).__name__})"
            self.store.add_event(name, "rolled-back" if olds else "failed", f"{manifest.version}: {reason}")
            if news and olds:
                self._undo(news, olds[0])
            self.store.set_last_error(name, reason)
            raise
        for surplus in olds[manifest.replicas :]:
            self.store.switch(name, add=[], remove=[surplus])
            self.retire(surplus)
        if rollback_of is None:
            self.store.add_revision(
                RevisionRecord(
                    plugin=name,
                    revision=revision,
                    version=manifest.version,
                    image=target.image,
                    image_id=target.image_id,
                    fingerprint=target.fingerprint,
                    manifest=manifest.model_dump(mode="json"),
                    created=time.time(),
                )
            )
        self.store.add_event(name, "activated", f"{manifest.version} (revision {revision}) serving")
        if olds:
            self.store.add_event(name, "reload-succeeded", f"{olds[0].version} -> {manifest.version}")
        return news[0]

    def _replace(
        self, target: RollTarget, revision: int, old: InstanceRecord | None, state_from: InstanceRecord | None
    ) -> InstanceRecord:
        """Start one new instance, make it ready, switch it in for `old`, retire `old`."""
        manifest = target.manifest
        instance = self._start(target, revision)
        try:
            self.progress(f"waiting for {manifest.name} {manifest.version} to be ready")
            routes = self._wait_ready(instance, manifest)
            if state_from is not None:
                self._hand_over(state_from, instance)
        except BaseException:
            self.discard(instance)
            raise
        self.store.switch(manifest.name, add=[instance], remove=[old] if old else [], routes=routes)
        if old is not None:
            self.progress(f"draining {old.plugin} {old.version} (revision {old.revision})")
            self.retire(old)
        return instance

    def _undo(self, replaced: list[InstanceRecord], previous: InstanceRecord) -> None:
        """Put the previous version back into the slots a failed roll had already replaced."""
        revisions = {r.revision: r for r in self.store.revisions(previous.plugin)}
        record = revisions.get(previous.revision)
        plugin = self.store.plugin(previous.plugin)
        manifest = Manifest.model_validate(record.manifest if record else (plugin.manifest if plugin else {}))
        fingerprint = record.fingerprint if record else ""
        target = RollTarget(manifest, previous.image, previous.image_id, fingerprint, plugin.source if plugin else "")
        for instance in replaced:
            self.progress(f"rolling slot of {instance.plugin} back to {previous.version}")
            self._replace(target, previous.revision, instance, state_from=instance)

    def _start(self, target: RollTarget, revision: int) -> InstanceRecord:
        manifest = target.manifest
        instance_id = uuid.uuid4().hex[:10]
        socket_dir = self.settings.run_dir / instance_id
        socket_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(socket_dir, 0o777)  # the plugin runs as uid 10001 and creates its socket here
        labels = {
            LABEL_INSTALLATION: self.settings.installation_id,
            LABEL_PLUGIN: manifest.name,
            LABEL_VERSION: manifest.version,
            LABEL_REVISION: str(revision),
            LABEL_INSTANCE: instance_id,
            LABEL_FINGERPRINT: target.fingerprint,
            "sysops.source": target.source,
        }
        spec = InstanceSpec(
            name=f"sysops-{self.settings.installation_id}-{manifest.name}-{instance_id}",
            image=target.image_id,
            labels=labels,
            environment={
                "SYSOPS_LISTEN": "unix:///run/sysops/plugin.sock",
                "SYSOPS_INSTANCE": instance_id,
            },
            socket_dir=socket_dir,
            data_volume=self.data_volume(manifest.name),
            limits=limits_for(manifest),
            egress=tuple(EgressAllowance(rule.host, tuple(rule.ports)) for rule in egress_rules(manifest)),
            token=secrets.token_urlsafe(24),
        )
        self.progress(f"starting {manifest.name} {manifest.version} (revision {revision})")
        try:
            status = self.driver.start(spec)
        except BaseException:
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise
        record = InstanceRecord(
            id=instance_id,
            plugin=manifest.name,
            revision=revision,
            version=manifest.version,
            handle=status.handle,
            image=target.image,
            image_id=target.image_id,
            endpoint=status.endpoint or f"unix://{socket_dir}/plugin.sock",
            socket_dir=str(socket_dir),
            created=time.time(),
            token=spec.token,
        )
        self.store.add_instance(record)
        return record

    def _wait_ready(self, instance: InstanceRecord, manifest: Manifest) -> dict[str, bytes]:
        deadline = time.monotonic() + min(manifest.readiness.timeout_seconds, self.settings.ready_timeout)
        socket_path = Path(instance.socket_dir) / "plugin.sock"
        with PluginClient(instance.endpoint, manifest.name, instance.token) as client:
            while True:
                status = self.driver.inspect(instance.handle)
                if status is None or not status.running:
                    raise self.failure(instance, status)
                if (socket_path.exists() or not instance.endpoint.startswith("unix:")) and client.healthy(timeout=0.5):
                    break
                if time.monotonic() > deadline:
                    raise StartFailedError(
                        f"plugin {manifest.name!r} {manifest.version} was not ready within "
                        f"{manifest.readiness.timeout_seconds:g}s",
                        details=self.log_tail(instance.handle),
                    )
                time.sleep(_POLL_SECONDS)
            descriptor = client.describe()
            self._self_test(client, manifest)
        routes = {command.name: command.SerializeToString() for command in descriptor.commands}
        self._check_conflicts(manifest.name, routes)
        report = self.driver.resources(instance.handle, limits_for(manifest))
        if report.mismatches:
            raise StartFailedError(
                f"plugin {manifest.name!r}: the engine did not apply the manifest's limits "
                f"({'; '.join(report.mismatches)})",
                hint="the engine or its cgroup setup cannot enforce them; see docs/security.md",
            )
        return routes

    @staticmethod
    def _self_test(client: PluginClient, manifest: Manifest) -> None:
        """Run the manifest's readiness command, if it declares one; a failure means not ready."""
        command = manifest.readiness.command
        if not command:
            return
        *_, result = client.invoke(
            command, dict(manifest.readiness.arguments), timeout=manifest.readiness.timeout_seconds
        )
        if not isinstance(result, InvocationResult) or result.exit_code != 0:
            error = result.error if isinstance(result, InvocationResult) else "no result"
            raise StartFailedError(
                f"plugin {manifest.name!r} {manifest.version}: self-test {command!r} failed: {error}"
            )

    def _check_conflicts(self, plugin: str, routes: dict[str, bytes]) -> None:
        for command in sorted(routes):
            first = command.split(" ", 1)[0]
            if first in RESERVED_COMMANDS:
                raise CommandConflictError(f"command {command!r} of plugin {plugin!r} uses the reserved name {first!r}")
            if " " in command and first in routes:
                raise CommandConflictError(f"plugin {plugin!r} defines both a command and a group named {first!r}")
            claimed = self.store.route(command)
            if claimed is not None and claimed.plugin != plugin:
                raise CommandConflictError(
                    f"command {command!r} of plugin {plugin!r} is already provided by plugin {claimed.plugin!r}",
                    hint=f"rename it in one of them, or `sysops plugin down {claimed.plugin}` first",
                )
            group = command.split(" ", 1)[0]
            if " " in command and (clash := self.store.route(group)) is not None and clash.plugin != plugin:
                raise CommandConflictError(
                    f"command group {group!r} of plugin {plugin!r} clashes with command {group!r} "
                    f"of plugin {clash.plugin!r}"
                )

    def _hand_over(self, old: InstanceRecord, new: InstanceRecord) -> None:
        with (
            PluginClient(old.endpoint, old.plugin, old.token) as old_client,
            PluginClient(new.endpoint, new.plugin, new.token) as client,
        ):
            try:
                state = old_client.snapshot()
            except Exception:
                return  # the old instance is gone or broken: nothing to hand over
            client.restore(state)

    def failure(self, instance: InstanceRecord, status: InstanceStatus | None) -> StartFailedError:
        """Explain why an instance stopped, from its exit code and its last log lines."""
        label = f"plugin {instance.plugin!r} {instance.version}"
        if status is None:
            return StartFailedError(f"{label}: its container disappeared")
        if status.oom_killed:
            return StartFailedError(f"{label} was OOMKilled (memory limit reached)")
        lines = list(self.driver.logs(instance.handle, tail=30))
        own = [line.removeprefix("sysops-plugin: ") for line in lines if line.startswith("sysops-plugin: ")]
        reason = own[-1] if own else _EXIT_REASONS.get(status.exit_code or 0, f"exited with code {status.exit_code}")
        tail = "\n".join(summarize_log(lines)[-10:])
        return StartFailedError(
            f"{label} failed to start: {reason}", details=f"last log lines:\n{tail}" if tail else ""
        )

    def log_tail(self, handle: str, lines: int = 10) -> str:
        """The last log lines of an instance, for error messages."""
        tail = "\n".join(summarize_log(list(self.driver.logs(handle, tail=30)))[-lines:])
        return f"last log lines:\n{tail}" if tail else "no log output"

    def retire(self, instance: InstanceRecord) -> None:
        """Drain an instance (in-flight calls finish), stop it, and remove it."""
        with PluginClient(instance.endpoint, instance.plugin, instance.token) as client:
            client.shutdown(grace_seconds=self.settings.drain_timeout)
        deadline = time.monotonic() + self.settings.drain_timeout + 1
        while time.monotonic() < deadline:
            status = self.driver.inspect(instance.handle)
            if status is None or not status.running:
                break
            time.sleep(_POLL_SECONDS)
        self.discard(instance)

    def discard(self, instance: InstanceRecord) -> None:
        """Remove an instance, its socket directory and its record."""
        self.driver.stop(instance.handle, timeout=1)
        self.driver.remove(instance.handle)
        shutil.rmtree(instance.socket_dir, ignore_errors=True)
        self.store.delete_instance(instance.id)
