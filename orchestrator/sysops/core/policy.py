"""The operator's policy file: defaults and caps for plugin limits, checked at `sysops plugin up`.

A plugin's manifest says what it wants; the operator says what any plugin may have. The file is YAML,
read from `$SYSOPS_POLICY` or else `<SYSOPS_HOME>/policy.yaml` (no file: no caps, built-in defaults):

    defaults: {cpu_percent: 50, memory_mb: 128}          # for limits a manifest leaves out
    caps: {cpu_percent: 200, memory_mb: 512, pids: 256, disk_io_mb_per_sec: 50, network_connections: 20,
           data_mb: 1024, replicas: 4, logs_max_mb: 10, logs_files: 3}  # replicas: 10 unless the policy says otherwise
    egress: allow                                        # or deny: refuse any `network:` allow-list
    min_rating: 4                                        # refuse plugins rated lower (core/rating.py)
    hold_upgrades: installed                             # hold upgrades asking more: installed | all | none
    plugins:                                             # host-service grants and config values per plugin
      "*": {grants: [logs.write, "state.*"]}             # "*": every plugin
      monitoring: {grants: ["metrics.*", "alerts.*"], config: {threshold: 90}}
    callers:                                             # server only: CLI tokens -> roles
      - {name: alice, token_sha256: "<sha256 hex of the token>", role: viewer}   # viewer | operator | admin

Grants are permission names with segment wildcards (`system.*`, `*`); a plugin gets only what its
manifest asks (sysops/services/permissions.py). A caller's token is kept as its SHA-256 only.

A key the manifest sets above its cap is refused (exit code 9) with a message naming the file, the key,
the asked value and the cap. A key it leaves out takes the policy default (else the built-in one),
lowered to the cap; an unlimited key (`disk_io_mb_per_sec`, `network_connections`) takes the cap.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
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

from sysops.checks.policy import CheckPolicy
from sysops.core import safe_yaml
from sysops.core.manifest import PERMISSION_NAME_RULE, SECRET_NAME, Limits, LogLimits, Manifest, is_permission_name
from sysops.core.names import PLUGIN_NAME_RULE, is_plugin_name, shown
from sysops.errors import PolicyDeniedError
from sysops.trust.policy import TrustPolicy

POLICY_FILE = "policy.yaml"
#: Most instances one plugin may run when the policy sets no `caps.replicas`.
DEFAULT_REPLICAS_CAP = 10


class LimitValues(BaseModel):
    """Values per limit key (all optional); each must also be a valid manifest value (checked at load)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    cpu_percent: Annotated[float | None, Field(gt=0)] = None
    memory_mb: Annotated[int | None, Field(ge=16)] = None
    disk_io_mb_per_sec: Annotated[float | None, Field(gt=0)] = None
    network_connections: Annotated[int | None, Field(ge=1)] = None
    pids: Annotated[int | None, Field(ge=8)] = None
    data_mb: Annotated[int | None, Field(ge=16)] = None


class Caps(LimitValues):
    """Caps: one per limit key, and the number of replicas."""

    replicas: Annotated[int | None, Field(ge=1)] = None
    #: Caps of the manifest's `logs.max_mb` and `logs.files` (log output an instance keeps on the host).
    logs_max_mb: Annotated[int | None, Field(ge=1)] = None
    logs_files: Annotated[int | None, Field(ge=1)] = None


#: The `plugins:` key whose entry applies to every plugin.
ALL_PLUGINS = "*"
Role = Literal["viewer", "operator", "admin"]
_CONFIG_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _grant(value: str) -> str:
    if value != "*" and not is_permission_name(value):
        raise ValueError(f"not a grant: '*' or {PERMISSION_NAME_RULE}")
    return value


def _plugin_key(value: str) -> str:
    if value != ALL_PLUGINS and not is_plugin_name(value):
        raise ValueError(f"neither '*' nor a plugin name ({PLUGIN_NAME_RULE})")
    return value


def _secret_key(value: str) -> str:
    if not SECRET_NAME.fullmatch(value):
        raise ValueError("not a secret name (lowercase letters, digits, '_' and '-', at most 63)")
    return value


def _config_key(value: str) -> str:
    if not _CONFIG_KEY.fullmatch(value):
        raise ValueError("not a config key (a Python identifier of at most 64 characters)")
    return value


class KubernetesSecretKey(BaseModel):
    """One key of a Kubernetes Secret in the server's namespace."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")]
    key: Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]


class SecretReference(BaseModel):
    """Where one of a plugin's secrets comes from: a file on the host (read when asked) or a Kubernetes Secret."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    file: Annotated[str | None, StringConstraints(min_length=1, max_length=4096)] = None
    kubernetes: KubernetesSecretKey | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> SecretReference:
        if (self.file is None) == (self.kubernetes is None):
            raise ValueError("give exactly one of 'file' (a path on the host) or 'kubernetes' ({name, key})")
        if self.file is not None and not self.file.startswith("/"):
            raise ValueError("'file' must be an absolute path")
        return self


class PluginGrants(BaseModel):
    """What the operator gives one plugin (or every plugin, under `"*"`): permission grants and config values."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    grants: list[Annotated[str, AfterValidator(_grant)]] = Field(default_factory=list, max_length=256)
    config: dict[Annotated[str, AfterValidator(_config_key)], Any] = Field(default_factory=dict, max_length=64)
    #: Secrets by reference (the manifest's `secrets:` names them); never the secret itself.
    secrets: dict[Annotated[str, AfterValidator(_secret_key)], SecretReference] = Field(
        default_factory=dict, max_length=32
    )


class CallerEntry(BaseModel):
    """A CLI caller of the server: a name, the SHA-256 (hex) of its token, and its role."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    #: pydantic's (Rust) regex: `$` is the very end of the text, no newline before it.
    name: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
    token_sha256: str
    role: Role

    @field_validator("token_sha256")
    @classmethod
    def _is_sha256_hex(cls, value: str) -> str:
        if not _SHA256_HEX.fullmatch(value):
            raise ValueError("must be 64 lowercase hex digits: the SHA-256 of the token (sha256sum), never the token")
        return value


class Policy(BaseModel):
    """The operator's policy."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    defaults: LimitValues = Field(default_factory=LimitValues)
    caps: Caps = Field(default_factory=Caps)
    egress: Literal["allow", "deny"] = "allow"
    plugins: dict[Annotated[str, AfterValidator(_plugin_key)], PluginGrants] = Field(default_factory=dict)
    callers: list[CallerEntry] = Field(default_factory=list, max_length=1000)
    #: Which static findings block a build (sysops/checks/policy.py).
    checks: CheckPolicy = Field(default_factory=CheckPolicy)
    #: The lowest security rating (1-6, core/rating.py) a plugin may have to run; None: any.
    min_rating: Annotated[int | None, Field(ge=1, le=6)] = None
    #: Which upgrades asking for more than the serving version are held for `sysops plugin approve`
    #: (core/held_upgrades.py): those of plugins installed from a package, git, an index or a registry
    #: (`installed`), also those brought up from a directory (`all`), or none.
    hold_upgrades: Literal["installed", "all", "none"] = "installed"
    #: Which signatures each trust tier requires (sysops/trust/policy.py).
    trust: TrustPolicy = Field(default_factory=TrustPolicy)
    #: Where the policy came from, for messages ("" = built in).
    source: str = ""


def policy_path(home: Path) -> Path:
    """The policy file in effect: `$SYSOPS_POLICY`, else `<home>/policy.yaml`."""
    return Path(os.environ.get("SYSOPS_POLICY") or home / POLICY_FILE)


def load_policy(home: Path) -> Policy:
    """Load the policy; no file means no caps (unless `$SYSOPS_POLICY` names a missing file: an error)."""
    path = policy_path(home)
    try:
        if not path.is_file():
            if os.environ.get("SYSOPS_POLICY"):
                raise PolicyDeniedError(f"{path}: policy file not found (named by SYSOPS_POLICY)")
            return Policy()
        data = safe_yaml.load(safe_yaml.read_text(path)) or {}
    except OSError as exc:
        raise PolicyDeniedError(f"{path}: cannot read the policy file: {exc.strerror or exc}") from None
    except safe_yaml.InputLimitError as exc:
        raise PolicyDeniedError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise PolicyDeniedError(f"{path}: {safe_yaml.describe_yaml_error(exc)}") from None
    if not isinstance(data, dict):
        raise PolicyDeniedError(f"{path}: expected a mapping with defaults, caps, egress, plugins, callers")
    try:
        policy = Policy.model_validate({**data, "source": str(path)})
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        # A caller entry holds a token's hash, and a mistaken one may hold the token itself: never echo it.
        got = "" if key.startswith("callers") else f" (got {shown(error.get('input'))})"
        raise PolicyDeniedError(f"{path}: key {shown(key)}: {message}{got}") from None
    _check_manifest_bounds(policy, path)
    _check_callers(policy, path)
    for key, default in policy.defaults.model_dump(exclude_none=True).items():
        cap = getattr(policy.caps, key)
        if cap is not None and default > cap:
            raise PolicyDeniedError(f"{path}: defaults.{key} is {default:g}, above caps.{key} {cap:g}")
    return policy


def grants_for(policy: Policy, plugin: str) -> list[str]:
    """The grants that apply to `plugin`: those of the `"*"` entry, then its own."""
    return [grant for key in (ALL_PLUGINS, plugin) if key in policy.plugins for grant in policy.plugins[key].grants]


def config_values_for(policy: Policy, plugin: str) -> dict[str, Any]:
    """The config values the policy gives `plugin`: the `"*"` entry's, overridden by its own."""
    values: dict[str, Any] = {}
    for key in (ALL_PLUGINS, plugin):
        if key in policy.plugins:
            values.update(policy.plugins[key].config)
    return values


def role_for_token(policy: Policy, token: str) -> tuple[str, Role] | None:
    """The (name, role) of the caller whose token is `token`, or None (every entry compared in constant time)."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    found: tuple[str, Role] | None = None
    for caller in policy.callers:
        if hmac.compare_digest(caller.token_sha256, digest) and found is None:
            found = (caller.name, caller.role)
    return found


def _check_callers(policy: Policy, path: Path) -> None:
    """Refuse two callers with one name or one token: which role would apply would depend on the order."""
    for field in ("name", "token_sha256"):
        seen: set[str] = set()
        for index, caller in enumerate(policy.callers):
            value = getattr(caller, field)
            if value in seen:
                raise PolicyDeniedError(f"{path}: key 'callers.{index}.{field}': the same {field} twice")
            seen.add(value)


def _check_manifest_bounds(policy: Policy, path: Path) -> None:
    """Refuse a default or cap no manifest could hold (such as cpu_percent 0.5): it would be applied as is."""
    for section in ("defaults", "caps"):
        values = getattr(policy, section).model_dump(exclude_none=True)
        for key, value in values.items():
            if key not in Limits.model_fields:
                continue
            try:
                Limits.model_validate({key: value})
            except ValidationError as exc:
                message = exc.errors()[0]["msg"]
                raise PolicyDeniedError(f"{path}: key '{section}.{key}': {message} (got {shown(value)})") from None


def apply_policy(manifest: Manifest, policy: Policy, source: str) -> Manifest:
    """Return the manifest with policy defaults and caps applied, or raise PolicyDeniedError naming the key.

    `source` names the manifest file in messages.
    """
    where = f" ({policy.source})" if policy.source else ""
    if policy.egress == "deny" and manifest.network != "none":
        raise PolicyDeniedError(f"{source}: network asks for an allow-list, policy allows only 'none'{where}")
    replicas_cap = policy.caps.replicas or DEFAULT_REPLICAS_CAP
    if manifest.replicas > replicas_cap:
        raise PolicyDeniedError(
            f"{source}: replicas asks {manifest.replicas}, policy caps it at {replicas_cap}"
            f"{where if policy.caps.replicas else ' (the default; an operator may raise caps.replicas)'}"
        )
    asked = manifest.limits.model_fields_set
    values = manifest.limits.model_dump()
    for key in LimitValues.model_fields:
        cap = getattr(policy.caps, key)
        if key in asked:
            value = values[key]
            if cap is not None and (value is None or value > cap):
                shown = "unlimited" if value is None else f"{value:g}"
                raise PolicyDeniedError(f"{source}: limits.{key} asks {shown}, policy caps it at {cap:g}{where}")
            continue
        default = getattr(policy.defaults, key)
        value = default if default is not None else values[key]
        if cap is not None and (value is None or value > cap):
            value = cap
        values[key] = value
    return manifest.model_copy(
        update={"limits": Limits.model_validate(values), "logs": _capped_logs(manifest, policy, source)}
    )


def _capped_logs(manifest: Manifest, policy: Policy, source: str) -> LogLimits:
    """The manifest's `logs`, refused above a cap it asks for explicitly, lowered to the cap when left default."""
    where = f" ({policy.source})" if policy.source else ""
    values = manifest.logs.model_dump()
    for key, cap in (("max_mb", policy.caps.logs_max_mb), ("files", policy.caps.logs_files)):
        if cap is None or values[key] <= cap:
            continue
        if key in manifest.logs.model_fields_set:
            raise PolicyDeniedError(f"{source}: logs.{key} asks {values[key]}, policy caps it at {cap}{where}")
        values[key] = cap
    return LogLimits.model_validate(values)
