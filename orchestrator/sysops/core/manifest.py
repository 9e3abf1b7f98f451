"""The `plugin.yaml` manifest: a strict pydantic model, loaded with errors that name file and key.

The model is the single definition of the manifest; `manifests/plugin.schema.json` is exported from it
(`python -m sysops.core.manifest > manifests/plugin.schema.json`) and a unit test keeps the two equal.
"""

from __future__ import annotations

import ipaddress
import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sysops.errors import ManifestError

MANIFEST_FILE = "plugin.yaml"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_]\w*$")
_REQUIREMENT = re.compile(r"^\s*([a-z0-9][-a-z0-9]*)\s*(.*)$")


class PluginType(StrEnum):
    """The five plugin types of ADR-006."""

    COMMAND = "command"
    SERVICE = "service"
    INTEGRATION = "integration"
    CONFIGURATION = "configuration"
    EVENT = "event"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    """Resource limits of each instance; absent keys take the operator's defaults."""

    cpu_percent: Annotated[float, Field(gt=0, le=6400, description="Percent of one core (100 = one core)")] = 100
    memory_mb: Annotated[int, Field(ge=16, le=1 << 20, description="Memory limit; swap is held equal")] = 256
    disk_io_mb_per_sec: Annotated[
        float | None, Field(gt=0, description="Read and write throttle on the data volume's device")
    ] = None
    network_connections: Annotated[int | None, Field(ge=1, description="Concurrent outbound connections allowed")] = (
        None
    )
    pids: Annotated[int, Field(ge=8, le=1 << 20, description="Maximum processes and threads")] = 128


class EgressRule(_Strict):
    """One destination a plugin may reach: a host name, an IP or a CIDR, and optional ports."""

    host: str = Field(description="Host name, IP address or CIDR")
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=list)

    @field_validator("host")
    @classmethod
    def _host_is_plausible(cls, host: str) -> str:
        try:
            ipaddress.ip_network(host, strict=False)
        except ValueError:
            if not re.match(r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$", host):
                raise ValueError("must be a host name, an IP address or a CIDR") from None
        return host


class Compatibility(_Strict):
    """Version ranges of sysops and Python the plugin works with."""

    sysops: str = Field(default=">=0.1", description="PEP 440 specifier of supported sysops versions")
    python: str = Field(default=">=3.11", description="PEP 440 specifier of supported Python versions")

    @field_validator("sysops", "python")
    @classmethod
    def _is_specifier(cls, value: str) -> str:
        try:
            SpecifierSet(value)
        except InvalidSpecifier:
            raise ValueError(f"{value!r} is not a version range like '>=0.1,<1.0'") from None
        return value


class Readiness(_Strict):
    """When a new instance counts as ready: health SERVING, plus an optional self-test command."""

    timeout_seconds: Annotated[float, Field(gt=0, le=600, description="Seconds to become ready")] = 30
    command: str | None = Field(default=None, description="A command of the plugin that must succeed first")
    arguments: dict[str, Any] = Field(default_factory=dict, description="Arguments of the self-test command")


class Manifest(_Strict):
    """A plugin's `plugin.yaml`."""

    name: str = Field(description="DNS-1123 label, unique per installation")
    version: str = Field(description="Semantic version of the plugin")
    description: str = ""
    entrypoint: str = Field(description="'package.module:PluginClass'")
    types: list[PluginType] = Field(default_factory=lambda: [PluginType.COMMAND])
    requires: list[str] = Field(default_factory=list, description="Other plugins, e.g. 'monitoring>=1.0'")
    conflicts: list[str] = Field(default_factory=list, description="Plugins that must not run beside this one")
    compatibility: Compatibility = Field(default_factory=Compatibility)
    permissions: list[str] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    network: Literal["none"] | list[EgressRule] = Field(default="none", description="'none' or an allow-list")
    readiness: Readiness = Field(default_factory=Readiness)
    replicas: Annotated[int, Field(ge=1, le=16, description="Instances serving at once; calls are spread")] = 1

    @field_validator("name")
    @classmethod
    def _name_is_dns_label(cls, name: str) -> str:
        if not _DNS_LABEL.match(name):
            raise ValueError("must be a DNS-1123 label: lowercase letters, digits and '-', at most 63")
        return name

    @field_validator("version")
    @classmethod
    def _version_is_semver(cls, version: str) -> str:
        try:
            Version(version)
        except InvalidVersion:
            raise ValueError(f"{version!r} is not a version like '1.2.3'") from None
        return version

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_shape(cls, entrypoint: str) -> str:
        if not _ENTRYPOINT.match(entrypoint):
            raise ValueError("must look like 'package.module:PluginClass'")
        return entrypoint

    @field_validator("requires", "conflicts")
    @classmethod
    def _requirements_shape(cls, values: list[str]) -> list[str]:
        for value in values:
            match = _REQUIREMENT.match(value)
            if not match or not _DNS_LABEL.match(match.group(1)):
                raise ValueError(f"{value!r} must be a plugin name with an optional range, like 'monitoring>=1.0'")
            try:
                SpecifierSet(match.group(2))
            except InvalidSpecifier:
                raise ValueError(f"{value!r} has an invalid version range") from None
        return values

    @field_validator("permissions")
    @classmethod
    def _permission_shape(cls, values: list[str]) -> list[str]:
        for value in values:
            if not re.match(r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$", value):
                raise ValueError(f"{value!r} must be a dotted permission like 'deployment.execute'")
        return values


def _format_location(location: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in location:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        elif item not in ("list[EgressRule]", "literal['none']"):
            parts.append(str(item))
    return ".".join(parts) or "(top level)"


def _allowed_keys(model: type[BaseModel], location: tuple[int | str, ...]) -> str:
    for item in location[:-1]:
        if isinstance(item, int):
            continue
        field = model.model_fields.get(str(item))
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return ", ".join(model.model_fields)


def _describe_error(error: Any) -> str:
    location = tuple(error["loc"])
    key = _format_location(location)
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}' (allowed here: {_allowed_keys(Manifest, location)})"
    if error["type"] == "missing":
        return f"missing required key '{key}'"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"key '{key}': {message} (got {json.dumps(error.get('input'), default=str)})"


def parse_manifest(data: Any, source: str) -> Manifest:
    """Validate already-loaded manifest data; `source` names the file in errors."""
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: expected a mapping of keys (name, version, entrypoint, ...)")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A `network` list error is reported once per union branch; keep the most specific one.
        errors = [e for e in errors if not (e["loc"][:1] == ("network",) and len(e["loc"]) == 2)] or errors
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ManifestError(f"{source}: {_describe_error(errors[0])}{more}") from None


def load_manifest(plugin_dir: Path) -> Manifest:
    """Load and validate `<plugin_dir>/plugin.yaml`."""
    path = plugin_dir / MANIFEST_FILE
    if not plugin_dir.is_dir():
        raise ManifestError(f"{plugin_dir}: no such plugin directory")
    if not path.is_file():
        raise ManifestError(f"{path}: file not found; a plugin directory needs a plugin.yaml (see docs/plugins.md)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ManifestError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_manifest(data, str(path))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of plugin.yaml."""
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://sysops.dev/schemas/plugin.v1.json"
    return schema


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
