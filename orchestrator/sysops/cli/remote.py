"""The CLI's side of the control API: the plugin operations, done by this installation's resident host (over
its 0600 Unix socket) or by a `sysops serve` of another context (over TCP with its token, and TLS verified with
the context's CA and server name unless the user chose plaintext: cli/contexts.py).

`up` builds the plugin image with the local Docker engine (the host and servers never build), pushes it
when `SYSOPS_REGISTRY` is set (otherwise the nodes must already have it, as on a single-node cluster that
shares this engine), then asks the host or server to roll it. The image is tagged with that side's
installation id, so `down --purge` on one server never untags an image another server runs. Errors come
back with the CLI exit code.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from sysops_sdk.protocol.v1 import plugin_pb2 as plugin_pb
from sysops_sdk.wire import MAX_MESSAGE_BYTES

from sysops.cli.contexts import LOCAL, REMOTE_ENDPOINT, ServerContext
from sysops.core.client import PROTOCOL_METADATA, InvocationResult, invocation_items
from sysops.core.lifecycle import PluginState
from sysops.errors import EngineUnavailableError, ExitCode, ServerUnverifiedError, SysopsError, UsageError
from sysops.server.protocol.v1 import control_pb2 as pb
from sysops.server.protocol.v1 import control_pb2_grpc as pb_grpc
from sysops.store import EventRecord, InstanceRecord, RevisionRecord, Route

if TYPE_CHECKING:
    from sysops.core.manifest import Manifest
    from sysops.core.operations import PluginOperations
    from sysops.core.orchestrator import PluginStatus
    from sysops.runtime.docker.driver import DockerDriver

EXIT_CODE_METADATA_KEY = "sysops-exit-code"
#: What gRPC's connection error says when TLS failed, and the reason to give for it.
_TLS_FAILURES = (
    (re.compile(r"CERTIFICATE_VERIFY_FAILED"), "its certificate is not signed by the CA {ca}"),
    (re.compile(r"Hostname Verification|No match found for server name"), "its certificate does not name {name}"),
    (re.compile(r"WRONG_VERSION_NUMBER"), "it does not speak TLS"),
    (re.compile(r"(?i)tls handshake failed|ssl_error"), "the TLS handshake failed"),
)


def open_channel(context: ServerContext) -> grpc.Channel:
    """The gRPC channel to the context's host or server: plaintext to a Unix socket or when the user chose
    `insecure`, else TLS verified with the context's CA (the system's without one) for its server name."""
    options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    if context.server.startswith("unix:"):
        return grpc.insecure_channel(context.server, options=options)
    if context.insecure:
        _warn_plaintext(context)
        return grpc.insecure_channel(context.server, options=options)
    root: bytes | None = None
    if context.ca:
        try:
            root = Path(context.ca).read_bytes()
        except OSError as exc:
            raise UsageError(
                f"CA file {context.ca} of context {context.name!r}: cannot read it ({exc.strerror or exc})",
                hint="SYSOPS_SERVER_CA or `sysops context set --ca` names the server's CA certificate",
            ) from None
    if context.server_name:
        options.append(("grpc.ssl_target_name_override", context.server_name))
    credentials = grpc.ssl_channel_credentials(root_certificates=root)
    return grpc.secure_channel(context.server, credentials, options=options)


_warned_plaintext: set[str] = set()


def _warn_plaintext(context: ServerContext) -> None:
    """One stderr line, once per server and process: the token goes to a TCP server in the clear."""
    if context.server in _warned_plaintext:
        return
    _warned_plaintext.add(context.server)
    print(
        f"warning: talking plaintext (no TLS, --insecure) to {context.server}: the token is sent in the clear",
        file=sys.stderr,
    )


def _tls_failure(error: grpc.RpcError, context: ServerContext) -> SysopsError | None:
    """A ServerUnverifiedError when a TLS connection failed to verify the server, else None."""
    if context.insecure or context.server.startswith("unix:") or error.code() != grpc.StatusCode.UNAVAILABLE:
        return None
    details = str(error.details() or "")
    ca = context.ca or "(the system's CAs)"
    name = context.server_name or context.server.rpartition(":")[0]
    for pattern, reason in _TLS_FAILURES:
        if pattern.search(details):
            return ServerUnverifiedError(
                f"sysops server {context.server} refused: TLS verification failed, {reason.format(ca=ca, name=name)}",
                hint="give the server's CA (SYSOPS_SERVER_CA or `sysops context set --ca`) and its certificate's "
                "name (SYSOPS_SERVER_NAME); plaintext only with --insecure",
            )
    return None


def _translate(error: grpc.RpcError, context: ServerContext) -> SysopsError:
    trailing = dict(error.trailing_metadata() or ()) if hasattr(error, "trailing_metadata") else {}
    code = trailing.get(EXIT_CODE_METADATA_KEY)
    if code is None:
        if error.code() == grpc.StatusCode.UNAUTHENTICATED:
            return EngineUnavailableError(
                f"sysops server {context.server} refused the token of context {context.name!r}",
                hint="set SYSOPS_TOKEN or `sysops context set` with the server's token",
            )
        if context.name == LOCAL:
            return EngineUnavailableError(
                f"the sysops host stopped answering ({error.code().name}: {error.details()})",
                hint="`sysops host status` and `sysops host logs` say why; the next command starts it again",
            )
        unverified = _tls_failure(error, context)
        if unverified is not None:
            return unverified
        return EngineUnavailableError(
            f"sysops server {context.server} not reachable ({error.code().name}: {error.details()})",
            hint="check `sysops context ls`, SYSOPS_SERVER, and that the server runs"
            + ("; a server with TLS refuses plaintext: drop --insecure (SYSOPS_INSECURE)" if context.insecure else ""),
        )
    message, _, details = str(error.details()).partition("\n")
    translated = SysopsError(message, details=details)
    translated.exit_code = ExitCode(int(code))
    return translated


class RemoteClient:
    """A connection to a control API: the local host's (Unix socket) or a `sysops serve`'s (TCP, token)."""

    def __init__(self, context: ServerContext, progress: Any = None, *, dev: Path | None = None) -> None:
        self.context = context
        #: `plugin up --dev DIR`: the plugin directory that runs in development mode (imaging/dev_code.py); the
        #: plugins it requires, brought up first by the same client, do not.
        self.dev = dev.resolve() if dev is not None else None
        self.progress = progress or (lambda message: None)
        self.channel = open_channel(context)
        self.stub = pb_grpc.ControlStub(self.channel)
        self.metadata = (("authorization", f"Bearer {context.token}"),)

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self.stub, method)(request, metadata=self.metadata, timeout=60)
        except grpc.RpcError as error:
            raise _translate(error, self.context) from None

    def _stream(self, method: str, request: Any) -> Any:
        try:
            for progress in getattr(self.stub, method)(request, metadata=self.metadata):
                if progress.done:
                    return json.loads(progress.result_json or "null")
                self.progress(progress.message)
        except grpc.RpcError as error:
            raise _translate(error, self.context) from None
        return None

    # what the plugin commands call
    def reconcile(self) -> None:
        """The server reconciles on its own."""

    def up(self, path: Path, key: str = "") -> tuple[InstanceRecord, bool]:
        """Build the image with the local engine (imaging/plugin_image.py), then have the host or server roll it
        (under `key`, a side-by-side key, when given)."""
        from sysops.core.code_checks import check_plugin_code
        from sysops.core.manifest import load_manifest
        from sysops.imaging.plugin_image import plugin_build
        from sysops.runtime.factory import docker_driver
        from sysops.settings import Settings

        plugin_dir = path.resolve()
        manifest = load_manifest(plugin_dir)
        dev = plugin_dir == self.dev
        if dev and self.context.name != LOCAL:
            raise UsageError(
                f"--dev mounts the code of {plugin_dir} from this machine: only the local host runs it, "
                f"not the server of context {self.context.name!r}",
                hint="drop --dev (the server runs the image), or `sysops context use local`",
            )
        settings = Settings()
        check_plugin_code(settings.home, plugin_dir, manifest, self.progress)
        driver = docker_driver()
        registry = os.environ.get("SYSOPS_REGISTRY", "")
        installation_id = str(self._query("server")["installation_id"])
        self.progress(f"preparing {manifest.name} {manifest.version} from {plugin_dir}")
        with plugin_build(
            driver,
            plugin_dir,
            manifest,
            base_image=settings.base_image,
            installation_id=installation_id,  # the server's: its `down --purge` finds the image
            cache_dir=settings.cache_dir,
            progress=self.progress,
            registry=registry,
            dev_key=manifest.name if dev else "",
        ) as build:
            existed = driver.image_id(build.tag) is not None
            if not (dev and existed):  # a development image's tag names its whole content: nothing to build
                build.build()
        self._check_image(driver, manifest, build.tag, plugin_dir, existed=existed)
        if registry:
            self.progress(f"pushing {build.tag}")
            driver.push_image(build.tag)
        request = pb.UpRequest(
            manifest_json=manifest.model_dump_json(
                exclude_unset=True
            ),  # an unset key stays unset: policy defaults apply
            image=build.tag,
            fingerprint=build.fingerprint,
            source=str(plugin_dir),
            key=key,
        )
        result = self._stream("Up", request)
        return _instance(result["instance"]), bool(result["changed"])

    def up_image(self, manifest: Manifest, image: str, fingerprint: str, source: str) -> tuple[InstanceRecord, bool]:
        """Have the host or server roll to an image already in the engine or a registry (`REPO@sha256:...` of a
        plugin installed from a registry: distribution/oci.py), without building."""
        request = pb.UpRequest(
            manifest_json=manifest.model_dump_json(exclude_unset=True),
            image=image,
            fingerprint=fingerprint,
            source=source,
        )
        result = self._stream("Up", request)
        return _instance(result["instance"]), bool(result["changed"])

    @staticmethod
    def _check_image(driver: DockerDriver, manifest: Manifest, tag: str, plugin_dir: Path, *, existed: bool) -> None:
        """Refuse an image whose Python, SDK or protocol does not fit (core/compatibility.py) before the host is
        asked (the host cannot read an image's labels on Kubernetes), removing it unless the engine had it."""
        from sysops.core.compatibility import check_image

        try:
            check_image(manifest, driver.image_labels(tag), str(plugin_dir))
        except SysopsError:
            if not existed:
                driver.remove_image(tag)
            raise

    def down(self, name: str, *, purge: bool = False, cascade: bool = False, force: bool = False) -> None:
        """Remove a plugin (refused while running plugins require it, unless `cascade` or `force`)."""
        self._stream("Down", pb.DownRequest(name=name, purge=purge, cascade=cascade, force=force))

    def rollback(self, name: str, to: int | None = None, key: str = "") -> InstanceRecord:
        """Roll back to an earlier revision (with `key`, another key of its plugin: start it under that key)."""
        return _instance(self._stream("Rollback", pb.RollbackRequest(name=name, to=to or 0, key=key)))

    def _query(self, kind: str, name: str = "", *, include_all: bool = False) -> Any:
        return json.loads(self._call("Query", pb.QueryRequest(kind=kind, name=name, all=include_all)).json)

    # host services: views any caller may read, actions by role (server/operator_api.py)
    def view(self, kind: str, name: str = "", *, include_all: bool = False) -> Any:
        """A host-services view as JSON data: permissions, config, metrics or alerts."""
        return self._query(kind, name, include_all=include_all)

    def act(self, kind: str, arguments: dict[str, Any]) -> Any:
        """A host-services action (config-set, events-publish, alert-resolve); its JSON result."""
        reply = self._call("Act", pb.ActRequest(kind=kind, arguments_json=json.dumps(arguments)))
        return json.loads(reply.json or "null")

    def list(self) -> builtins.list[PluginStatus]:
        """Every plugin's status."""
        return [_status(item) for item in self._query("list")]

    def status(self, name: str, *, limits: bool = False) -> PluginStatus:
        """One plugin's status (the server always includes limits and usage)."""
        return _status(self._query("status", name))

    def history(self, name: str) -> builtins.list[RevisionRecord]:
        """A plugin's revisions."""
        return [RevisionRecord(**item) for item in self._query("history", name)]

    def catalog(self) -> builtins.list[dict[str, Any]]:
        """Every plugin version the host or server knows, per store key (Query kind `catalog`)."""
        return list(self._query("catalog"))

    def logs(
        self, name: str, *, follow: bool = False, tail: int | None = None, structured: bool = False
    ) -> Iterator[str]:
        """A plugin's log lines (`structured`: its records from the `logs` host service, each a JSON object)."""
        if structured:
            yield from self._log_texts(pb.LogsRequest(name=name, follow=follow, tail=tail or 0, structured=True))
            return
        for text in self.log_batches(name, follow=follow, tail=tail):
            yield from text.split("\n")

    def log_batches(self, name: str, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        """A plugin's log lines in batches: each text is one or more lines joined by newlines (an older server
        sends one line each)."""
        return self._log_texts(pb.LogsRequest(name=name, follow=follow, tail=tail or 0, batched=True))

    def _log_texts(self, request: pb.LogsRequest) -> Iterator[str]:
        try:
            for line in self.stub.Logs(request, metadata=self.metadata):
                yield line.text
        except grpc.RpcError as error:
            raise _translate(error, self.context) from None

    def events(self, plugin: str | None = None, *, follow: bool = False) -> Generator[EventRecord]:
        """Lifecycle events from the server; a follow's call is cancelled when the caller stops reading."""
        request = pb.EventsRequest(plugin=plugin or "", follow=follow)
        call = self.stub.Events(request, metadata=self.metadata)
        try:
            for event in call:
                yield EventRecord(event.plugin, event.time, event.kind, event.message, event.id)
        except grpc.RpcError as error:
            raise _translate(error, self.context) from None
        finally:
            call.cancel()

    # routed commands
    def routes(self, prefix: str = "") -> builtins.list[Route]:
        """The server's command table (as routes that invoke through the server)."""
        reply = self._call("Routes", pb.RoutesRequest())
        return [
            Route(route.command, route.plugin, route.spec, ((REMOTE_ENDPOINT, ""),))
            for route in reply.routes
            if not prefix or route.command == prefix or route.command.startswith(prefix + " ")
        ]

    def invoke(
        self, command: str, arguments: dict[str, Any], output_format: str, plugin: str = ""
    ) -> Iterator[str | InvocationResult]:
        """Run a plugin command through the server (which re-sends it if an instance refused it during a roll)."""
        request = pb.InvokeRequest(command=command, arguments_json=json.dumps(arguments), output_format=output_format)
        try:
            chunks = self.stub.Invoke(request, metadata=(*self.metadata, *PROTOCOL_METADATA))
            yield from invocation_items((plugin_pb.InvokeEvent.FromString(chunk.event) for chunk in chunks), plugin)
        except grpc.RpcError as error:
            raise _translate(error, self.context) from None


def _instance(data: dict[str, Any]) -> InstanceRecord:
    """An instance from a server's reply, which leaves out its token, socket directory and endpoint."""
    return InstanceRecord(**{"endpoint": "", "socket_dir": "", **data})


def _status(data: dict[str, Any]) -> PluginStatus:
    from sysops.core.orchestrator import PluginStatus

    fields = dict(data)
    fields["state"] = PluginState(fields["state"])
    fields["events"] = [EventRecord(plugin=fields["name"], **event) for event in fields.get("events", [])]
    return PluginStatus(**fields)


if TYPE_CHECKING:
    _checked: type[PluginOperations] = RemoteClient  # mypy: the client is a whole door (core/operations.py)
