"""What the test kit needs of the plugin under test: where its directory is, and the few plugin.yaml keys it reads.

The kit runs beside the author's tests, not inside sysops, so it reads plugin.yaml itself (the SDK never imports
the orchestrator): the name, the entrypoint, the types, and the defaults of `config:` and `configuration.keys`
that the host would give the plugin. The orchestrator validates the whole manifest at `plugin up`; here a
missing or malformed key is one clear line naming the file (KitError).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "plugin.yaml"


class KitError(Exception):
    """The test kit cannot set up the plugin under test (no plugin.yaml, a bad entrypoint, no sysops CLI)."""


@dataclass(frozen=True)
class KitManifest:
    """The keys of one plugin.yaml the test kit uses."""

    directory: Path
    name: str
    entrypoint: str
    types: tuple[str, ...]
    permissions: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    section: dict[str, Any] = field(default_factory=dict)


def find_plugin_dir(start: Path) -> Path:
    """The nearest directory at or above `start` holding a plugin.yaml."""
    for directory in (start, *start.parents):
        if (directory / MANIFEST_NAME).is_file():
            return directory
    raise KitError(
        f"no {MANIFEST_NAME} in {start} or any directory above it: put the tests inside the plugin's directory "
        "or set the pytest ini option sysops_plugin_dir"
    )


def read_manifest(directory: Path) -> KitManifest:
    """Read the plugin.yaml of `directory`."""
    path = directory / MANIFEST_NAME
    try:
        import yaml
    except ImportError:
        raise KitError("the sysops test kit needs PyYAML to read plugin.yaml: pip install 'sysops-sdk[test]'") from None
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise KitError(f"{path}: cannot be read ({str(exc).splitlines()[0]})") from None
    if not isinstance(document, dict):
        raise KitError(f"{path}: expected a mapping of keys (name, version, entrypoint, ...)")
    for key in ("name", "entrypoint"):
        if not isinstance(document.get(key), str):
            raise KitError(f"{path}: key {key!r} is missing or not a string")
    types = document.get("types", ["command"])
    permissions = document.get("permissions") or []
    configuration = document.get("configuration") or {}
    return KitManifest(
        directory=directory,
        name=document["name"],
        entrypoint=document["entrypoint"],
        types=tuple(str(kind) for kind in types) if isinstance(types, list) else ("command",),
        permissions=tuple(str(permission) for permission in permissions) if isinstance(permissions, list) else (),
        config=_defaults(document.get("config")),
        section=_defaults(configuration.get("keys") if isinstance(configuration, dict) else None),
    )


def _defaults(schema: Any) -> dict[str, Any]:
    """The default of every key of a `config:` (or `configuration.keys`) schema that declares one."""
    if not isinstance(schema, dict):
        return {}
    return {key: spec["default"] for key, spec in schema.items() if isinstance(spec, dict) and "default" in spec}
