"""The installation's configuration file (`config.yaml`) and sysops's own key in it, `plugin_dirs`.

One file per installation configures the system: `$SYSOPS_SYSTEM_CONFIG` when set, else `$SYSOPS_HOME/config.yaml`.
It is read with `sysops.core.safe_yaml` (size, alias, depth and duplicate-key limits). sysops owns one
top-level key here, `plugin_dirs: [paths]`: directories scanned for plugins by `sysops.discovery`
(relative paths are relative to the file's directory, `~` is expanded). `SYSOPS_PLUGIN_PATH`
(os.pathsep-separated, like PATH) adds directories before them. Every other top-level section belongs to a
configuration plugin and is only passed through here (the system configuration validates them).

A missing default file is an empty configuration; a file named by `$SYSOPS_SYSTEM_CONFIG` must exist. A bad file
is one line naming the file and the key, exit 4 (`ConfigFileError`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sysops.core import safe_yaml
from sysops.core.names import shown
from sysops.errors import ExitCode, SysopsError
from sysops.settings import Settings

#: Names the configuration file instead of `$SYSOPS_HOME/config.yaml`.
CONFIG_VARIABLE = "SYSOPS_SYSTEM_CONFIG"
#: More plugin directories, separated by os.pathsep; scanned before the file's `plugin_dirs`.
PLUGIN_PATH_VARIABLE = "SYSOPS_PLUGIN_PATH"
#: The file's name in the state directory.
CONFIG_FILE_NAME = "config.yaml"
#: sysops's own top-level key: the directories scanned for plugins.
PLUGIN_DIRS_KEY = "plugin_dirs"
#: Most entries `plugin_dirs` may list.
MAX_PLUGIN_DIRS = 256
_HINT = "see docs/plugins.md (Discovery)"


class ConfigFileError(SysopsError):
    """The installation's configuration file cannot be read or a key of sysops's own is wrong (exit 4)."""

    exit_code = ExitCode.INVALID_PLUGIN


@dataclass(frozen=True)
class InstallationConfig:
    """The parsed configuration file: where it is, its top-level sections, and the plugin directories to scan."""

    path: Path
    #: Whether the file exists (a missing default file is an empty configuration).
    exists: bool
    #: Every top-level section as read (sysops's `plugin_dirs` and the configuration plugins' sections).
    sections: dict[str, Any] = field(default_factory=dict)
    #: `plugin_dirs` of the file, absolute, in the file's order.
    plugin_dirs: tuple[Path, ...] = ()


def config_path(settings: Settings | None = None) -> Path:
    """The installation's configuration file: `$SYSOPS_SYSTEM_CONFIG`, else `$SYSOPS_HOME/config.yaml`."""
    named = os.environ.get(CONFIG_VARIABLE)
    if named:
        return _normal(Path(named).expanduser())
    return (settings or Settings()).home / CONFIG_FILE_NAME


def _normal(path: Path) -> Path:
    """`path` absolute, with `.` and `..` taken out lexically (symbolic links are kept: they are followed later)."""
    return Path(os.path.normpath(path.absolute()))


def _where(path: Path) -> str:
    return shown(str(path), 300)[1:-1]


def _read_sections(path: Path) -> dict[str, Any]:
    try:
        data = safe_yaml.load(safe_yaml.read_text(path))
    except OSError as exc:
        raise ConfigFileError(f"{_where(path)}: cannot read: {exc.strerror or exc}", hint=_HINT) from None
    except safe_yaml.InputLimitError as exc:
        raise ConfigFileError(f"{_where(path)}: {exc}", hint=_HINT) from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{_where(path)}: {safe_yaml.describe_yaml_error(exc)}", hint=_HINT) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{_where(path)}: expected a mapping of sections (got {shown(data)})", hint=_HINT)
    for key in data:
        if not isinstance(key, str):
            raise ConfigFileError(f"{_where(path)}: section names are strings (got {shown(key)})", hint=_HINT)
    return data


def _plugin_dirs(path: Path, value: Any) -> tuple[Path, ...]:
    where = _where(path)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigFileError(
            f"{where}: key '{PLUGIN_DIRS_KEY}': must be a list of directory paths (got {shown(value)})", hint=_HINT
        )
    if len(value) > MAX_PLUGIN_DIRS:
        raise ConfigFileError(f"{where}: key '{PLUGIN_DIRS_KEY}': more than {MAX_PLUGIN_DIRS} directories", hint=_HINT)
    directories = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip() or "\0" in item:
            raise ConfigFileError(
                f"{where}: key '{PLUGIN_DIRS_KEY}[{index}]': must be a directory path, a non-empty string "
                f"(got {shown(item)})",
                hint=_HINT,
            )
        directories.append(_normal(path.parent / Path(item).expanduser()))
    return tuple(directories)


def read_installation_config(path: Path | None = None) -> InstallationConfig:
    """Read the configuration file (`config_path()` unless given); raise ConfigFileError with one line if bad."""
    explicit = path is not None or bool(os.environ.get(CONFIG_VARIABLE))
    path = path or config_path()
    if not os.path.lexists(path):
        if explicit:
            raise ConfigFileError(
                f"{_where(path)}: no such configuration file", hint=f"create it, or unset {CONFIG_VARIABLE}"
            )
        return InstallationConfig(path=path, exists=False)
    sections = _read_sections(path)
    return InstallationConfig(
        path=path, exists=True, sections=sections, plugin_dirs=_plugin_dirs(path, sections.get(PLUGIN_DIRS_KEY))
    )


def plugin_path_dirs() -> tuple[Path, ...]:
    """The directories `SYSOPS_PLUGIN_PATH` names (empty entries left out; relative ones from the current one)."""
    value = os.environ.get(PLUGIN_PATH_VARIABLE, "")
    return tuple(_normal(Path(item).expanduser()) for item in value.split(os.pathsep) if item.strip())
