"""Rolling replacement of a plugin's instance, with automatic rollback when the new one is not ready.

The sequence: start the new instance beside the old one, wait for gRPC readiness (health SERVING and a
successful Describe), check its commands against every other plugin's, quiesce the old one and take
its state (Snapshot: it refuses new calls, which callers re-send, and its calls in flight finish), hand
the state to the new one (Restore), switch routing in one store transaction, then stop the old one. Any
failure before the switch removes the new instance and re-opens the old one, which keeps serving;
nothing of a failed roll is stored but its events and its error (docs/hot-loading.md).

With a `rollout:` block, the first new instance is analysed before it takes over (docs/rollout-analysis.md):
after readiness and the smoke command it gets a copy of the old one's state and `share` of the calls beside
it (store route shares) for `analysis_s`; then core/analysis.py decides. Failed or inconclusive: the split
ends, the new instance drains (calls routed to it finish, later ones are refused before they run and
re-sent to the old one) and the roll is rolled back. Passed: the take-over goes on as without analysis.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from sysops_sdk.wire import CLAIM, DEV_CODE_ENV, RESTART_ENV, TYPES_ENV

from sysops.core import events
from sysops.core.analysis import AnalysisError, Outcome, decide
from sysops.core.call_meter import METER
from sysops.core.client import InvocationResult, PluginClient
from sysops.core.deadlines import stored_routes
from sysops.core.dependencies import plugin_name_of
from sysops.core.events import EventKind
from sysops.core.instance_hooks import hooks_for
from sysops.core.manifest import EgressRule, Manifest, PluginType, RolloutAnalysis
from sysops.core.spares import LABEL_SPARE, SPARE_REVISION, is_spare, send_claim, spare_key
from sysops.errors import CommandConflictError, StartFailedError, SysopsError
from sysops.imaging.dev_code import code_dir, is_dev_fingerprint
from sysops.private_paths import ensure_private_dir
from sysops.reserved import RESERVED_COMMANDS
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
    LivenessCheck,
    ResourceLimits,
    RuntimeDriver,
    plugin_uid,
)
from sysops.runtime.socket_dirs import remove_socket_dir
from sysops.settings import Settings
from sysops.store import InstanceRecord, RevisionRecord, Store

#: Exit codes of the plugin server (sysops_sdk.wire) and what they mean for a user.
_EXIT_REASONS = {3: "entrypoint failed to load", 4: "initialize() failed", 5: "cannot serve", 137: "killed"}
#: How often a drain looks whether the old instance stopped.
_POLL_SECONDS = 0.03
#: How often readiness is checked: the new instance's wait is on the path of every reload (save -> serving).
_READY_POLL_SECONDS = 0.01
#: How often that wait asks the engine whether the new instance still runs (a crash is reported this late at most).
_READY_INSPECT_SECONDS = 0.1
#: Restore with no state re-opens an instance its Snapshot quiesced, leaving its state as it is.
_REOPEN = b""

Progress = Callable[[str], None]
_T = TypeVar("_T")


@dataclass(frozen=True)
class RollTarget:
    """What to roll to: an image, the manifest it was built from, and the build's fingerprint."""

    manifest: Manifest
    image: str
    image_id: str
    fingerprint: str
    source: str
    #: This roll built the image: a failed roll removes it (and its layer images) unless a revision uses it.
    built: bool = False


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
        log_max_bytes=manifest.logs.max_mb * 1024 * 1024,
        log_files=manifest.logs.files,
        data_bytes=limits.data_mb * 1024 * 1024,
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


def _command_error(client: PluginClient, command: str, arguments: dict[str, Any], timeout: float) -> str | None:
    """Run a check command (self-test, smoke) once; None if it succeeded, else why it failed."""
    *_, result = client.invoke(command, dict(arguments), timeout=timeout)
    if isinstance(result, InvocationResult) and result.exit_code == 0:
        return None
    return result.error if isinstance(result, InvocationResult) else "no result"


class Rollout:
    """Starts instances, waits for readiness, switches routes, and stops what is replaced."""

    def __init__(self, settings: Settings, store: Store, driver: RuntimeDriver, progress: Progress) -> None:
        self.settings = settings
        self.store = store
        self.driver = driver
        self.progress = progress
        #: The resident host's (host services listeners, subscriptions); None in the CLI and unit tests.
        self.hooks = hooks_for(settings.store_path)

    def data_volume(self, plugin: str) -> str:
        """Name of the plugin's persistent data volume (`-datafs`: a filesystem of `limits.data_mb`, which an
        older sysops's `-data` volume, still removed by label on purge, was not)."""
        return f"sysops-{self.settings.installation_id}-{plugin}-datafs"

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
        stored = manifest.model_dump(mode="json")
        if not olds:  # nothing serves: the record describes this attempt (a failed one shows as Failed)
            self.store.save_plugin(name, target.source, self.driver.name, stored)
        news: list[InstanceRecord] = []
        # A `plugin rollback` goes back to a version that served: no analysis (nor for an undo below).
        analysis = manifest.rollout if olds and rollback_of is None else None
        try:
            for slot in range(manifest.replicas):
                old = olds[slot] if slot < len(olds) else None
                # An added replica copies the state of the first new instance, which took over olds[0]'s.
                peer = news[0] if old is None and olds and news else None
                trial = (analysis, olds) if slot == 0 and analysis is not None else None
                news.append(self._replace(target, revision, old, peer=peer, trial=trial))
        except BaseException as exc:
            reason = str(exc) if isinstance(exc, SysopsError) else f"interrupted ({type(exc).__name__})"
            attempt = f"{manifest.version} (revision {revision}): {reason}"
            if olds:
                kept = f"; {olds[0].version} (revision {olds[0].revision}) keeps serving"
                events.record(self.store, name, EventKind.ROLLED_BACK, attempt + kept)
                self._undo(news, olds[0])
            else:
                events.record(self.store, name, EventKind.FAILED, attempt)
                self._withdraw(name, news)
            if target.built:
                self.remove_unused_image(target)
            self.store.set_last_error(name, reason)
            raise
        self.store.save_plugin(name, target.source, self.driver.name, stored)
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
        if olds:
            how = " (`plugin rollback`)" if rollback_of is not None else ""
            message = f"{olds[0].version} -> {manifest.version} (revision {revision}) serving{how}"
            events.record(self.store, name, EventKind.ROLLED, message)
        else:
            events.record(self.store, name, EventKind.ACTIVE, f"{manifest.version} (revision {revision}) serving")
        if self.hooks is not None:
            self.hooks.activated(name)
        self.keep_spares(target)
        return news[0]

    def _replace(
        self,
        target: RollTarget,
        revision: int,
        old: InstanceRecord | None,
        peer: InstanceRecord | None,
        trial: tuple[RolloutAnalysis, list[InstanceRecord]] | None = None,
    ) -> InstanceRecord:
        """Start one new instance, make it ready, take over from `old` (or copy `peer`'s state), retire `old`.

        With a `trial` (the analysis and the instances serving), the new instance is analysed beside them first.
        """
        manifest = target.manifest
        instance = self._claim_spare(target, revision) or self._start(target, revision)
        try:
            self.progress(f"waiting for {manifest.name} {manifest.version} to be ready")
            routes = self._wait_ready(instance, manifest)
            if trial is not None and routes:
                self._analyse(instance, *trial)
            elif trial is not None:  # an event plugin, a side-by-side version: no routed call to measure
                self.progress(f"{manifest.name} {manifest.version} serves no routed command: no analysis")
            self.progress(f"switching {manifest.name} to {manifest.version} (revision {revision})")
            if old is not None:
                self._take_over(old, instance, routes)
            else:
                if peer is not None:
                    self._copy_state(peer, instance)
                self.store.switch(manifest.name, add=[instance], remove=[], routes=routes)
        except BaseException:
            self.discard(instance)
            raise
        if old is not None:
            self.progress(f"draining {old.plugin} {old.version} (revision {old.revision})")
            self.retire(old)
        return instance

    def _analyse(self, new: InstanceRecord, analysis: RolloutAnalysis, olds: list[InstanceRecord]) -> None:
        """Run the smoke command, then give `new` `share` of the calls beside `olds` for the window and decide;
        raise AnalysisError (with `new` drained and out of routing) unless the analysis passed."""
        name = new.plugin
        if analysis.smoke:
            self._smoke(new, analysis)
        if self._serves(olds[0]):  # a crashed old instance has no state to copy
            self._copy_state(olds[0], new)
        shares = {old.id: (1 - analysis.share) / len(olds) for old in olds} | {new.id: analysis.share}
        self.progress(f"analysing {name} {new.version}: {analysis.share:.0%} of calls for {analysis.analysis_s:g}s")
        METER.watch(new.endpoint)
        try:
            self.store.set_shares(name, shares)
            time.sleep(analysis.analysis_s)
            self.store.set_shares(name, {})  # the window ends; the calls it sent to `new` still count
            verdict = decide(METER.settle(new.endpoint, self.settings.drain_timeout), analysis)
        except BaseException:
            self.store.set_shares(name, {})
            self._drain(new)
            raise
        finally:
            METER.unwatch(new.endpoint)
        if verdict.outcome is not Outcome.PASSED:
            self._drain(new)
            hint = f"the previous version keeps serving; see `sysops plugin logs {name}` and docs/rollout-analysis.md"
            raise AnalysisError(verdict.reason, hint=hint)
        self.progress(verdict.reason)

    def _smoke(self, new: InstanceRecord, analysis: RolloutAnalysis) -> None:
        """Run the manifest's smoke command once against the new instance; a failure stops the roll."""
        with PluginClient(new.endpoint, new.plugin, new.token) as client:
            error = _command_error(client, str(analysis.smoke), analysis.smoke_arguments, self.settings.ready_timeout)
        if error is not None:
            raise AnalysisError(f"analysis smoke command {analysis.smoke!r} failed on {new.version}: {error}")

    def _take_over(self, old: InstanceRecord, new: InstanceRecord, routes: dict[str, bytes]) -> None:
        """Quiesce `old`, hand its state to `new`, and switch routing from one to the other.

        Between the Snapshot and the switch, calls reaching `old` are refused before they run and the
        CLI re-sends them once the route names `new`, so no write lands on `old` after its snapshot. If
        anything fails, `old` is re-opened and keeps serving.
        """
        if not self._serves(old):
            self.progress(f"{old.plugin} {old.version} does not answer: no state to hand over")
            self.store.switch(new.plugin, add=[new], remove=[old], routes=routes)
            return
        with PluginClient(old.endpoint, old.plugin, old.token) as old_client:
            state = self._snapshot(old, old_client)
            try:
                self._restore(new, state)
                self.store.switch(new.plugin, add=[new], remove=[old], routes=routes)
            except BaseException:
                with contextlib.suppress(grpc.RpcError):
                    old_client.restore(_REOPEN)
                raise

    def _copy_state(self, peer: InstanceRecord, new: InstanceRecord) -> None:
        """Give an added replica the state of a live peer (quiesced only while it is snapshotted)."""
        with PluginClient(peer.endpoint, peer.plugin, peer.token) as peer_client:
            try:
                state = self._snapshot(peer, peer_client)
            finally:
                with contextlib.suppress(grpc.RpcError):
                    peer_client.restore(_REOPEN)
        self._restore(new, state)

    def _snapshot(self, instance: InstanceRecord, client: PluginClient) -> bytes:
        """Quiesce an instance and take its state (its calls in flight get the drain timeout to finish)."""
        return self._rpc(instance, "Snapshot", lambda: client.snapshot(timeout=self.settings.drain_timeout + 5))

    def _restore(self, new: InstanceRecord, state: bytes) -> None:
        with PluginClient(new.endpoint, new.plugin, new.token) as client:
            self._rpc(new, "Restore", lambda: client.restore(state, timeout=self.settings.ready_timeout))

    def _serves(self, instance: InstanceRecord) -> bool:
        """Whether an instance runs and answers health checks (a crashed one has no state to hand over)."""
        status = self.driver.inspect(instance.handle)
        if status is None or not status.running:
            return False
        with PluginClient(instance.endpoint, instance.plugin, instance.token) as client:
            return client.healthy(timeout=1.0)

    def _rpc(self, instance: InstanceRecord, call: str, function: Callable[[], _T]) -> _T:
        """Run a hand-over call; a failure becomes a StartFailedError naming the instance and the reason."""
        try:
            return function()
        except grpc.RpcError as exc:
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            raise StartFailedError(
                f"plugin {instance.plugin!r}: state hand-over failed: {call} on {instance.version} "
                f"(revision {instance.revision}): {detail}",
                hint="the previous version keeps serving; fix snapshot()/restore() and save again",
                details=self.log_tail(instance.handle),
            ) from None

    def _withdraw(self, name: str, instances: list[InstanceRecord]) -> None:
        """Take a failed first install out of routing and remove its instances: nothing of it stays up."""
        self.store.deactivate(name)
        for instance in instances:
            self.discard(instance)

    def remove_unused_image(self, target: RollTarget) -> None:
        """Remove the image a failed roll built (its untagged layer images go with it), unless still used."""
        name = target.manifest.name
        used = {r.image_id for r in self.store.revisions(name)} | {i.image_id for i in self.store.instances(name)}
        if target.image_id in used:
            return
        self.progress(f"removing image {target.image} of the failed roll")
        with contextlib.suppress(SysopsError):
            self.driver.remove_image(target.image)

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
            self._replace(target, previous.revision, instance, peer=None)

    def _start(self, target: RollTarget, revision: int, *, spare: str = "") -> InstanceRecord:
        """Start an instance of `target` as `revision`; with `spare` (its key), a spare instance (core/spares.py)."""
        manifest = target.manifest
        code = self._dev_code(manifest.name, target.fingerprint)  # before anything is made: it may refuse
        instance_id = uuid.uuid4().hex[:10]
        # The driver gives the directory to the plugin's uid (Docker: a tmpfs of its own, see socket_dirs.py).
        socket_dir = ensure_private_dir(self.settings.ensure_run_dir() / instance_id)
        labels = {
            LABEL_INSTALLATION: self.settings.installation_id,
            LABEL_PLUGIN: manifest.name,
            LABEL_VERSION: manifest.version,
            LABEL_REVISION: str(SPARE_REVISION if spare else revision),
            LABEL_INSTANCE: instance_id,
            LABEL_FINGERPRINT: "" if spare else target.fingerprint,
            "sysops.source": target.source,
            **({LABEL_SPARE: spare} if spare else {}),
        }
        environment = {
            "SYSOPS_LISTEN": "unix:///run/sysops/plugin.sock",
            "SYSOPS_INSTANCE": instance_id,
            TYPES_ENV: ",".join(manifest.types),  # the SDK checks the class against them (sysops_sdk/_types.py)
        }
        if PluginType.SERVICE in manifest.types:  # what the SDK does when run() ends (sysops_sdk/_service.py)
            environment[RESTART_ENV] = manifest.service.restart
        host_endpoint = self.hooks.host_endpoint() if self.hooks is not None else ""
        if host_endpoint:  # where the plugin's get_service() calls go (services/transport.py)
            environment["SYSOPS_HOST_ENDPOINT"] = host_endpoint
        if code is not None:  # development mode: which snapshot to import, or (a spare) wait to be told
            environment[DEV_CODE_ENV] = CLAIM if spare else target.fingerprint
        spec = InstanceSpec(
            name=f"sysops-{self.settings.installation_id}-{manifest.name}-{instance_id}",
            image=target.image_id,
            labels=labels,
            environment=environment,
            socket_dir=socket_dir,
            data_volume=self.data_volume(manifest.name),
            limits=limits_for(manifest),
            egress=tuple(EgressAllowance(rule.host, tuple(rule.ports)) for rule in egress_rules(manifest)),
            token=secrets.token_urlsafe(24),
            uid=plugin_uid(self.settings.installation_id, manifest.name),
            data_dir=self.settings.home.resolve() / "data" / manifest.name,
            liveness=LivenessCheck(**manifest.liveness.model_dump(), start_s=manifest.readiness.timeout_seconds),
            code_dir=code,
        )
        if spare:  # not "starting ...": that line opens a reload's start phase (core/reload_timing.py)
            self.progress(f"spare instance of {manifest.name} {manifest.version} starting, for the next save")
        else:
            self.progress(f"starting {manifest.name} {manifest.version} (revision {revision})")
        try:
            status = self.driver.start(spec)
        except BaseException:
            remove_socket_dir(socket_dir)
            raise
        record = InstanceRecord(
            id=instance_id,
            plugin=manifest.name,
            revision=SPARE_REVISION if spare else revision,
            version=manifest.version,
            handle=status.handle,
            image=target.image,
            image_id=target.image_id,
            endpoint=status.endpoint or f"unix://{socket_dir}/plugin.sock",
            socket_dir=str(socket_dir),
            created=time.time(),
            token=status.token or spec.token,  # a driver that derives its own (kubernetes: pod_tokens.py)
        )
        self.store.add_instance(record)
        if self.hooks is not None:  # its host services listener, now that the driver made its socket directory
            self.hooks.started(record)
        if not spare:
            message = f"{manifest.version} (revision {revision}) started in {status.handle[:12]}, waiting for readiness"
            events.record(self.store, manifest.name, EventKind.LOADED, message)
        return record

    def _spare_key(self, target: RollTarget) -> str:
        host_endpoint = self.hooks.host_endpoint() if self.hooks is not None else ""
        return spare_key(target.image_id, target.manifest.model_dump(mode="json"), host_endpoint)

    def _claim_spare(self, target: RollTarget, revision: int) -> InstanceRecord | None:
        """Have a spare of a development-mode plugin run `target`'s code as `revision` (core/spares.py); None when
        there is none that fits (a spare started for another image or manifest is removed)."""
        if not is_dev_fingerprint(target.fingerprint):
            return None
        manifest, key = target.manifest, self._spare_key(target)
        for spare in self._spares(manifest.name):
            if not self._fits(spare, key):
                self.discard(spare)
                continue
            self.progress(
                f"claiming spare instance {spare.id} for {manifest.name} {manifest.version} (revision {revision})"
            )
            # Recorded first: a host killed from here on leaves an instance of `revision` that never served, which
            # reconciliation removes, never a spare that runs plugin code.
            claimed = dataclasses.replace(spare, revision=revision, version=manifest.version, created=time.time())
            self.store.claim(claimed, target.fingerprint)
            if self.hooks is not None:  # its host-services listener knows it by its revision from now on
                self.hooks.started(claimed)
            try:
                send_claim(Path(spare.socket_dir), target.fingerprint, self.settings.ready_timeout)
            except OSError as exc:
                self.progress(f"spare instance {spare.id} of {manifest.name} cannot be claimed ({exc}); removing it")
                self.discard(claimed)
                continue
            message = (
                f"{manifest.version} (revision {revision}) given to spare {spare.handle[:12]}, waiting for readiness"
            )
            events.record(self.store, manifest.name, EventKind.LOADED, message)
            return claimed
        return None

    def _spares(self, name: str) -> list[InstanceRecord]:
        return [instance for instance in self.store.instances(name) if is_spare(instance)]

    def _fits(self, spare: InstanceRecord, key: str) -> bool:
        """Whether a spare runs and was started for what `key` describes."""
        status = self.driver.inspect(spare.handle)
        return status is not None and status.running and status.labels.get(LABEL_SPARE) == key

    def keep_spares(self, target: RollTarget) -> None:
        """After a successful roll: for a development-mode plugin, have one spare that fits `target` ready for its
        next roll (remove the others, start one if none fits); for any other, remove its spares (it left
        development mode). A spare that cannot be started or removed is only reported: the roll succeeded,
        and the next one starts an instance as production mode does."""
        wanted = is_dev_fingerprint(target.fingerprint)
        try:
            key = self._spare_key(target) if wanted else ""
            kept = False
            for spare in self._spares(target.manifest.name):
                if wanted and not kept and self._fits(spare, key):
                    kept = True
                else:
                    self.discard(spare)
            if wanted and not kept:
                self._start(target, SPARE_REVISION, spare=key)
        except SysopsError as exc:
            self.progress(f"spare instance of {target.manifest.name}: {exc.message}")

    def _dev_code(self, plugin: str, fingerprint: str) -> Path | None:
        """The directory of code snapshots a development-mode instance mounts (imaging/dev_code.py; None for a
        production one), once the revision's snapshot is seen in it: derived from the plugin and the
        fingerprint alone, so a client names no host path."""
        code = code_dir(self.settings.home.resolve(), plugin_name_of(plugin), fingerprint)  # a key's: its plugin's
        if code is None:
            return None
        if code.is_symlink() or not code.is_dir() or code.parent.is_symlink():
            raise StartFailedError(
                f"plugin {plugin!r}: the development-mode code {fingerprint[:16]} is not in {code.parent}",
                hint="run `sysops plugin up --dev PATH` again (it writes the code there)",
            )
        return code.parent

    def verify_ready(self, instance: InstanceRecord, manifest: Manifest) -> dict[str, bytes]:
        """Check a started instance as a roll does before it serves (for re-adoption); return its routes."""
        return self._wait_ready(instance, manifest)

    def _wait_ready(self, instance: InstanceRecord, manifest: Manifest) -> dict[str, bytes]:
        deadline = time.monotonic() + min(manifest.readiness.timeout_seconds, self.settings.ready_timeout)
        socket_path = Path(instance.socket_dir) / "plugin.sock"
        inspected = 0.0
        with PluginClient(instance.endpoint, manifest.name, instance.token) as client:
            while True:
                # Health first once the socket is there; the engine (tens of milliseconds a call on a busy host) is
                # asked whether the instance still runs only every _READY_INSPECT_SECONDS while it does not answer.
                if (socket_path.exists() or not instance.endpoint.startswith("unix:")) and client.healthy(timeout=0.5):
                    break
                if time.monotonic() - inspected >= _READY_INSPECT_SECONDS:
                    inspected = time.monotonic()
                    status = self.driver.inspect(instance.handle)
                    if status is None or not status.running:
                        raise self.failure(instance, status)
                if time.monotonic() > deadline:
                    raise StartFailedError(
                        f"plugin {manifest.name!r} {manifest.version} was not ready within "
                        f"{manifest.readiness.timeout_seconds:g}s",
                        details=self.log_tail(instance.handle),
                    )
                time.sleep(_READY_POLL_SECONDS)
            descriptor = client.describe()
            if manifest.types == [PluginType.EVENT] and descriptor.commands:
                names = ", ".join(sorted(command.name for command in descriptor.commands))
                raise StartFailedError(
                    f"plugin {manifest.name!r} {manifest.version} is an event plugin (types: [event]) "
                    f"but its code defines commands: {names}",
                    hint="remove the @plugin_command functions, or add 'command' to types in plugin.yaml",
                )
            self._self_test(client, manifest)
        from sysops.core.catalog import is_side_by_side  # its commands belong to the version under the name

        routes = {} if is_side_by_side(manifest.name) else stored_routes(manifest, descriptor)
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
        error = _command_error(client, command, manifest.readiness.arguments, manifest.readiness.timeout_seconds)
        if error is not None:
            raise StartFailedError(
                f"plugin {manifest.name!r} {manifest.version}: self-test {command!r} failed: {error}"
            )

    def _check_conflicts(self, plugin: str, routes: dict[str, bytes]) -> None:
        """Refuse reserved words and clashes early; the switch checks other plugins' claims again, atomically."""
        for command in sorted(routes):
            first = command.split(" ", 1)[0]
            if first in RESERVED_COMMANDS:
                raise CommandConflictError(
                    f"command {command!r} of plugin {plugin!r} uses the reserved name {first!r}",
                    hint=f"sysops keeps {', '.join(RESERVED_COMMANDS)} for itself; rename the command",
                )
            if " " in command and first in routes:
                raise CommandConflictError(f"plugin {plugin!r} defines both a command and a group named {first!r}")
        conflict = self.store.route_conflict(plugin, routes)
        if conflict is not None:
            raise conflict

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
        """Drain an instance (in-flight calls finish), stop it, and remove it (a spare serves nothing to drain)."""
        if not is_spare(instance):
            self._drain(instance)
        self.discard(instance)

    def _drain(self, instance: InstanceRecord) -> None:
        """Shut an instance down gracefully: its calls in flight finish, new ones are refused before they run."""
        with PluginClient(instance.endpoint, instance.plugin, instance.token) as client:
            client.shutdown(grace_seconds=self.settings.drain_timeout)
        deadline = time.monotonic() + self.settings.drain_timeout + 1
        while time.monotonic() < deadline:
            status = self.driver.inspect(instance.handle)
            if status is None or not status.running:
                break
            time.sleep(_POLL_SECONDS)

    def discard(self, instance: InstanceRecord) -> None:
        """Remove an instance, its socket directory and its record."""
        self.driver.stop(instance.handle, timeout=1)
        self.driver.remove(instance.handle)
        if self.hooks is not None:
            self.hooks.removed(instance)
        remove_socket_dir(instance.socket_dir)
        self.store.delete_instance(instance.id)
