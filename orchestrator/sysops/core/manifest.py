"""The `plugin.yaml` manifest: a strict pydantic model, loaded with errors that name file and key.

The model is the single definition of the manifest; `manifests/plugin.schema.json` is exported from it
(`python -m sysops.core.manifest > manifests/plugin.schema.json`) and a unit test keeps the two equal.
"""

from __future__ import annotations

import ipaddress
import json
import keyword
import math
import re
import socket
import typing
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from sysops.core import safe_yaml
from sysops.core.names import PLUGIN_NAME_RULE, is_plugin_name, shown
from sysops.errors import ManifestError

MANIFEST_FILE = "plugin.yaml"
#: Joins a plugin name and a major version into the key of a side-by-side version ('monitoring--v1').
SIDE_BY_SIDE_MARK = "--"
# Patterns are used with fullmatch (never `$`, which lets a trailing newline through) and are ASCII-only.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_REQUIREMENT = re.compile(r"\s*([a-z0-9][-a-z0-9]*)\s*([ -~]*)")
#: A permission name: dotted lowercase segments, `*` allowed after the first (`system.deploy`, `metrics.*`).
PERMISSION_NAME = re.compile(r"[a-z][a-z0-9_-]*(\.[a-z0-9_*-]+)*")
PERMISSION_NAME_RULE = "dotted lowercase words like 'state.read' or 'system.*' (letters, digits, '_', '-')"
_MAX_PERMISSION = 128
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?")
_MAX_ENTRYPOINT = 200


def is_permission_name(name: str) -> bool:
    """Say whether `name` is a valid permission name (as asked in `permissions:` and granted by the policy)."""
    return len(name) <= _MAX_PERMISSION and PERMISSION_NAME.fullmatch(name) is not None


def _printable_ascii(value: str) -> str:
    if not value.isascii() or not value.isprintable():
        raise ValueError("must be printable ASCII on one line")
    return value


#: A short one-line string: printable ASCII, no control characters or newlines.
_Line = Annotated[str, StringConstraints(max_length=200), AfterValidator(_printable_ascii)]


class PluginType(StrEnum):
    """The five plugin types of ADR-006."""

    COMMAND = "command"
    SERVICE = "service"
    INTEGRATION = "integration"
    CONFIGURATION = "configuration"
    EVENT = "event"


class _Strict(BaseModel):
    # strict: YAML `true` is no number and `"50"` no integer; floats must be finite.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Limits(_Strict):
    """Resource limits of each instance; absent keys take the operator's defaults."""

    # Bounds are what the engine enforces: below 1 % of a core the engine refuses the container, and a
    # throttle under 0.1 MiB/s rounds to no throttle at all.
    cpu_percent: Annotated[float, Field(ge=1, le=6400, description="Percent of one core (100 = one core)")] = 100
    memory_mb: Annotated[int, Field(ge=16, le=1 << 20, description="Memory limit; swap is held equal")] = 256
    disk_io_mb_per_sec: Annotated[
        float | None, Field(ge=0.1, le=100_000, description="Read and write throttle on the data volume's device")
    ] = None
    network_connections: Annotated[
        int | None, Field(ge=1, le=1_000_000, description="Concurrent outbound connections allowed")
    ] = None
    pids: Annotated[int, Field(ge=8, le=1 << 20, description="Maximum processes and threads")] = 128
    data_mb: Annotated[
        int, Field(ge=16, le=1 << 20, description="Size of the /data filesystem; writes beyond it get ENOSPC")
    ] = 256


class LogLimits(_Strict):
    """Log output each instance keeps on the host: `files` rotated files of at most `max_mb` MiB each."""

    max_mb: Annotated[int, Field(ge=1, le=1024, description="Size of one log file before it is rotated")] = 10
    files: Annotated[int, Field(ge=1, le=20, description="Log files kept (the oldest is dropped)")] = 3


class Liveness(_Strict):
    """How a supervising host (`sysops serve`) probes each instance, and when it restarts a wedged one."""

    interval_s: Annotated[float, Field(ge=0.5, le=3600, description="Seconds between health probes")] = 10
    timeout_s: Annotated[float, Field(gt=0, le=60, description="Seconds a probe waits for SERVING")] = 2
    failures: Annotated[int, Field(ge=1, le=100, description="Failed probes in a row before a restart")] = 3


class EgressRule(_Strict):
    """One destination a plugin may reach: a host name, an IP or a CIDR, and optional ports."""

    host: str = Field(max_length=253, description="Host name, IP address or CIDR")
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=list, max_length=64)

    @field_validator("host")
    @classmethod
    def _host_is_plausible(cls, host: str) -> str:
        try:
            network = ipaddress.ip_network(host, strict=False)
        except ValueError:
            return _check_host_name(host)
        if network.prefixlen == 0:
            raise ValueError(f"{shown(host)} allows every address; list the hosts or networks the plugin needs")
        return host


def _check_host_name(host: str) -> str:
    """A host name per RFC 1123: labels of letters, digits and '-', no empty label, not numeric at the end."""
    labels = host.split(".")
    if not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError("must be an IP address, a CIDR, or a host name of dot-separated labels ([A-Za-z0-9-], 1-63)")
    if labels[-1].isdigit() or _is_inet_aton_address(host):
        # `0x7f.1`, `127.1` or `017.0.0.1` would reach the resolver, which reads them as an IPv4 address.
        raise ValueError("looks like an IPv4 address in a non-standard form; write it as four decimals, e.g. 127.0.0.1")
    return host


def _is_inet_aton_address(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


class Compatibility(_Strict):
    """Version ranges of sysops, Python and the SDK the plugin works with (checked before a container starts)."""

    sysops: _Line = Field(default=">=0.1", description="PEP 440 specifier of supported sysops versions")
    python: _Line = Field(default=">=3.11", description="PEP 440 specifier of the base image's Python versions")
    sdk: _Line = Field(default=">=0.1", description="PEP 440 specifier of the base image's sysops-sdk versions")

    @field_validator("sysops", "python", "sdk")
    @classmethod
    def _is_specifier(cls, value: str) -> str:
        try:
            SpecifierSet(value)
        except InvalidSpecifier:
            raise ValueError(f"{shown(value)} is not a version range like '>=0.1,<1.0'") from None
        return value


class Readiness(_Strict):
    """When a new instance counts as ready: health SERVING, plus an optional self-test command."""

    timeout_seconds: Annotated[float, Field(gt=0, le=600, description="Seconds to become ready")] = 30
    command: _Line | None = Field(default=None, description="A command of the plugin that must succeed first")
    arguments: dict[str, Any] = Field(default_factory=dict, description="Arguments of the self-test command")


ConfigType = Literal["str", "int", "float", "bool", "list", "dict"]
_CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
}


class ConfigOption(_Strict):
    """One configuration key a plugin declares: its type, default, help, and optionally required or choices."""

    type: ConfigType = "str"
    default: Any = Field(default=None, description="Value when neither the policy nor `plugin config set` gives one")
    help: str = Field(default="", max_length=1000)
    required: bool = Field(default=False, description="A value must be given (policy or `plugin config set`)")
    choices: list[Any] | None = Field(default=None, max_length=256, description="The only values allowed")

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` for this key (what is allowed), or None when it is allowed."""
        kinds = _CONFIG_TYPES[self.type]
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            return f"must be of type {self.type} (got {shown(value)})"
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(shown(choice) for choice in self.choices)} (got {shown(value)})"
        return None

    @model_validator(mode="after")
    def _default_and_choices_fit(self) -> ConfigOption:
        for choice in self.choices or []:
            problem = ConfigOption(type=self.type).problem(choice)
            if problem is not None:
                raise ValueError(f"choice {problem}")
        if self.default is not None:
            problem = self.problem(self.default)
            if problem is not None:
                raise ValueError(f"default {problem}")
        return self


def _config_key(value: str) -> str:
    if not _IDENTIFIER.fullmatch(value) or keyword.iskeyword(value):
        raise ValueError("must be an identifier (letters, digits, '_'; at most 64 characters)")
    return value


COMMAND_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}( [a-z][a-z0-9-]{0,62}){0,7}")


def _command_name(value: str) -> str:
    if not COMMAND_NAME.fullmatch(value):
        raise ValueError("must be a command name of lowercase words, like 'greet' or 'db migrate'")
    return value


class RolloutAnalysis(_Strict):
    """Analysis after readiness (docs/rollout-analysis.md): the new version takes `share` of the calls for
    `analysis_s` seconds while the host measures it; a crossed threshold rolls back, too few calls keeps the old."""

    analysis_s: Annotated[float, Field(gt=0, le=3600, description="Seconds the new version is measured")] = 30
    share: Annotated[
        float, Field(gt=0, le=1, description="Share of calls routed to the new version during the analysis")
    ] = 0.5
    max_error_rate: Annotated[
        float, Field(ge=0, le=1, description="Failed calls of the new version above this share roll back")
    ] = 0.05
    max_p99_ms: Annotated[
        float | None, Field(gt=0, le=3_600_000, description="p99 latency of the new version above this rolls back")
    ] = None
    min_calls: Annotated[
        int, Field(ge=1, le=1_000_000, description="Calls the new version must answer for a conclusive analysis")
    ] = 20
    smoke: _Line | None = Field(default=None, description="A command run once against the new version first")
    smoke_arguments: dict[str, Any] = Field(default_factory=dict, description="Arguments of the smoke command")


class ServiceSettings(_Strict):
    """A service plugin's loop (`run()`): what happens when it ends."""

    restart: Literal["always", "on-failure", "never"] = Field(
        default="on-failure",
        description="Restart the instance when run() returns (always), raises (on-failure and always), or never",
    )


SECRET_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")


def _secret_name(value: str) -> str:
    if not SECRET_NAME.fullmatch(value):
        raise ValueError("must be a secret name of lowercase letters, digits, '_' and '-' (at most 63)")
    return value


class ConfigurationFragment(_Strict):
    """What a configuration plugin adds to the system configuration: one section and its keys."""

    section: Annotated[str, AfterValidator(_config_key)] = Field(description="Top-level key in config.yaml it owns")
    keys: dict[Annotated[str, AfterValidator(_config_key)], ConfigOption] = Field(
        default_factory=dict, max_length=256, description="The section's keys, typed like `config:`"
    )


class CommandSettings(_Strict):
    """What the manifest sets for one of the plugin's commands (overriding what its code declares)."""

    timeout_seconds: Annotated[
        float | None,
        Field(gt=0, le=86_400, description="Deadline of one call in seconds; overrides @plugin_command(timeout=)"),
    ] = None


class Manifest(_Strict):
    """A plugin's `plugin.yaml`."""

    name: str = Field(max_length=63, description="DNS-1123 label, unique per installation")
    version: _Line = Field(max_length=64, description="Semantic version of the plugin")
    description: str = Field(default="", max_length=1000)
    entrypoint: str = Field(max_length=_MAX_ENTRYPOINT, description="'package.module:PluginClass'")
    types: list[Annotated[PluginType, Field(strict=False)]] = Field(default_factory=lambda: [PluginType.COMMAND])
    requires: list[_Line] = Field(default_factory=list, description="Other plugins, e.g. 'monitoring>=1.0'")
    conflicts: list[_Line] = Field(default_factory=list, description="Plugins that must not run beside this one")
    compatibility: Compatibility = Field(default_factory=Compatibility)
    permissions: list[_Line] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    logs: LogLimits = Field(default_factory=LogLimits)
    network: Literal["none"] | list[EgressRule] = Field(default="none", description="'none' or an allow-list")
    readiness: Readiness = Field(default_factory=Readiness)
    liveness: Liveness = Field(default_factory=Liveness)
    replicas: Annotated[int, Field(ge=1, le=16, description="Instances serving at once; calls are spread")] = 1
    commands: dict[Annotated[str, AfterValidator(_command_name)], CommandSettings] = Field(
        default_factory=dict,
        max_length=256,
        description="Settings per command, e.g. {'db migrate': {timeout_seconds: 300}}",
    )
    config: dict[Annotated[str, AfterValidator(_config_key)], ConfigOption] = Field(
        default_factory=dict,
        max_length=64,
        description="Configuration keys the plugin reads through the config service, e.g. {threshold: {type: int}}",
    )
    rollout: RolloutAnalysis | None = Field(default=None, description="Analysis of a new version after readiness")
    service: ServiceSettings = Field(default_factory=ServiceSettings, description="A service plugin's run() loop")
    secrets: list[Annotated[str, AfterValidator(_secret_name)]] = Field(
        default_factory=list,
        max_length=32,
        description="Secrets the plugin reads by name; the operator's policy says where each one comes from",
    )
    configuration: ConfigurationFragment | None = Field(
        default=None, description="A configuration plugin's section of the system configuration"
    )
    stage: Literal["stable", "experimental", "deprecated"] = Field(
        default="stable",
        description="Release stage: `plugin upgrade` skips experimental versions unless asked, and warns on deprecated",
    )
    breaking_versions: list[_Line] = Field(
        default_factory=list,
        max_length=64,
        description="Versions that break compatibility with earlier ones, e.g. ['2.0.0']: "
        "`plugin upgrade` does not cross one without --allow-breaking",
    )

    @field_validator("name")
    @classmethod
    def _name_is_dns_label(cls, name: str) -> str:
        if not is_plugin_name(name):
            raise ValueError(f"must be a DNS-1123 label: {PLUGIN_NAME_RULE}")
        if SIDE_BY_SIDE_MARK in name:
            raise ValueError(f"must not contain {SIDE_BY_SIDE_MARK!r}: side-by-side versions are named 'NAME--vMAJOR'")
        return name

    @model_validator(mode="after")
    def _types_fit_their_blocks(self) -> Manifest:
        if (self.configuration is not None) != (PluginType.CONFIGURATION in self.types):
            raise ValueError(
                "a configuration plugin (types: [configuration]) needs a 'configuration:' block, and only it may "
                "have one"
            )
        if self.types == [PluginType.EVENT] and self.commands:
            raise ValueError("an event plugin has no commands: remove 'commands:' or add the type 'command'")
        return self

    @field_validator("version")
    @classmethod
    def _version_is_semver(cls, version: str) -> str:
        try:
            Version(version)
        except InvalidVersion:
            raise ValueError(f"{shown(version)} is not a version like '1.2.3'") from None
        if version != version.strip():
            raise ValueError("must not start or end with spaces")
        return version

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_shape(cls, entrypoint: str) -> str:
        module, _, attribute = entrypoint.partition(":")
        parts = [*module.split("."), attribute]
        if not all(_IDENTIFIER.fullmatch(part) and not keyword.iskeyword(part) for part in parts):
            raise ValueError("must look like 'package.module:PluginClass' (ASCII identifiers of at most 64 characters)")
        return entrypoint

    @field_validator("requires", "conflicts")
    @classmethod
    def _requirements_shape(cls, values: list[str]) -> list[str]:
        for value in values:
            match = _REQUIREMENT.fullmatch(value)
            if not match or not is_plugin_name(match.group(1)):
                raise ValueError(f"{shown(value)} must be a plugin name with an optional range, like 'monitoring>=1.0'")
            try:
                SpecifierSet(match.group(2))
            except InvalidSpecifier:
                raise ValueError(f"{shown(value)} has an invalid version range") from None
        return values

    @field_validator("permissions")
    @classmethod
    def _permission_shape(cls, values: list[str]) -> list[str]:
        for value in values:
            if not is_permission_name(value):
                raise ValueError(f"{shown(value)} is not a permission name: {PERMISSION_NAME_RULE}")
        return values


def _format_location(location: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in location:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        elif item not in ("list[EgressRule]", "literal['none']", "[key]"):
            parts.append(str(item))
    return ".".join(parts) or "(top level)"


def _allowed_keys(model: type[BaseModel], location: tuple[int | str, ...]) -> str:
    for item in location[:-1]:
        if isinstance(item, int):
            continue
        field = model.model_fields.get(str(item))
        annotation = getattr(field, "annotation", None)
        if typing.get_origin(annotation) is dict:  # `commands`: the next item is a command name
            annotation = typing.get_args(annotation)[1]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return ", ".join(model.model_fields)


def _describe_error(error: Any) -> str:
    location = tuple(error["loc"])
    key = shown(_format_location(location))[1:-1]  # a key a hostile manifest names is escaped and capped too
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}' (allowed here: {_allowed_keys(Manifest, location)})"
    if error["type"] == "missing":
        return f"missing required key '{key}'"
    message = " ".join(str(error["msg"]).removeprefix("Value error, ").split())
    return f"key '{key}': {message} (got {shown(error.get('input'))})"


def parse_manifest(data: Any, source: str) -> Manifest:
    """Validate already-loaded manifest data (YAML, or JSON from the control API); `source` names the file."""
    source = shown(source, 300)[1:-1]
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: expected a mapping of keys (name, version, entrypoint, ...)")
    try:
        safe_yaml.check_tree(data)
    except safe_yaml.InputLimitError as exc:
        raise ManifestError(f"{source}: {exc}", hint=_LIMITS_HINT) from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A `network` list error is reported once per union branch; keep the most specific one.
        errors = [e for e in errors if not (e["loc"][:1] == ("network",) and len(e["loc"]) == 2)] or errors
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ManifestError(f"{source}: {_describe_error(errors[0])}{more}") from None


def load_manifest(plugin_dir: Path) -> Manifest:
    """Load and validate `<plugin_dir>/plugin.yaml` within the limits of `sysops.core.safe_yaml`."""
    path = plugin_dir / MANIFEST_FILE
    where = shown(str(path), 300)[1:-1]
    try:
        if not plugin_dir.is_dir():
            raise ManifestError(f"{shown(str(plugin_dir), 300)[1:-1]}: no such plugin directory")
        if not path.is_file():
            raise ManifestError(
                f"{where}: file not found; a plugin directory needs a plugin.yaml (see docs/plugins.md)"
            )
        data = safe_yaml.load(safe_yaml.read_text(path))
    except OSError as exc:
        raise ManifestError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except safe_yaml.InputLimitError as exc:
        raise ManifestError(f"{where}: {exc}", hint=_LIMITS_HINT) from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{where}: {safe_yaml.describe_yaml_error(exc)}") from None
    return parse_manifest(data, str(path))


_LIMITS_HINT = (
    f"a plugin.yaml is UTF-8 of at most {safe_yaml.MAX_BYTES // 1024} KiB, {safe_yaml.MAX_ALIASES} aliases, "
    f"{safe_yaml.MAX_NODES} values and {safe_yaml.MAX_DEPTH} levels (docs/plugins.md)"
)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of plugin.yaml."""
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://sysops.dev/schemas/plugin.v1.json"
    return schema


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
