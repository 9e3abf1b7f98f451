"""The system configuration: the installation's config file, merged with what its owners declare.

The file is the installation config (`$SYSOPS_SYSTEM_CONFIG`, else `$SYSOPS_HOME/config.yaml`; the path comes
from core/installation_config.py). Each top-level key in it is owned by someone:

- sysops itself owns `plugin_dirs` (a list of directories scanned for plugins, read by discovery);
- every other key is a section owned by an installed configuration plugin: one whose manifest (as the
  store keeps it, so a plugin brought up and not taken down) has a `configuration:` block naming the
  section and typing its keys like `config:` (core/manifest.py ConfigurationFragment, ConfigOption). A
  side-by-side version (store key `NAME--vMAJOR`) owns nothing: the version under the plain name does.

Validation lists every problem, one line each, naming the file, the key and its owner, e.g.
`config.yaml: key 'backup.retention_days': must be of type int (got 'x'); owned by plugin backup-config 1.0.0`:
a section nobody owns, a key its owner does not declare, a value that does not fit its ConfigOption, a
required key without a value, two plugins claiming one section. `show` lists every declared key with its
value, default, owner and source (`file` or `default`). A configuration plugin reads its own section,
defaults merged in, through the config host service's `section` method (services/config.py); a section
with problems is refused with them, as the config service refuses an invalid value at read time; a section
two plugins claim is read by neither (a manifest cannot take another plugin's section by claiming it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from sysops.core import installation_config, safe_yaml
from sysops.core.installation_config import CONFIG_VARIABLE, PLUGIN_DIRS_KEY, ConfigFileError, config_path
from sysops.core.manifest import SIDE_BY_SIDE_MARK, ConfigOption, ConfigurationFragment
from sysops.core.names import shown
from sysops.settings import Settings
from sysops.store import PluginRecord

#: sysops's own keys of the config file, and what they hold (discovery reads them: core/installation_config.py).
SYSOPS_KEYS: Mapping[str, ConfigOption] = {
    PLUGIN_DIRS_KEY: ConfigOption(
        type="list", default=[], help="Directories scanned for plugins (relative to the config file)"
    ),
}
#: The owner column of sysops's own keys.
SYSOPS_OWNER = "sysops"
Source = Literal["file", "default", "unset"]


@dataclass(frozen=True)
class Owner:
    """An installed configuration plugin and the section it owns."""

    plugin: str
    version: str
    fragment: ConfigurationFragment

    def __str__(self) -> str:
        return f"plugin {self.plugin} {self.version}"


@dataclass(frozen=True)
class Owners:
    """Who owns which section, and the claims that cannot all hold (two plugins, one section)."""

    sections: dict[str, Owner]
    problems: list[str]
    #: The section each plugin claims, and the problems of each section claimed twice (read by no claimer).
    claims: dict[str, str] = field(default_factory=dict)
    contested: dict[str, list[str]] = field(default_factory=dict)


def section_owners(records: Iterable[PluginRecord]) -> Owners:
    """The sections the installed plugins' `configuration:` blocks claim (by plugin name; first claim wins for
    validation and show, but a contested section is served to no claimer: a plugin cannot take another's by
    claiming it)."""
    sections: dict[str, Owner] = {}
    problems: list[str] = []
    claims: dict[str, str] = {}
    contested: dict[str, list[str]] = {}
    for record in sorted(records, key=lambda found: found.name):
        block = record.manifest.get("configuration")
        if SIDE_BY_SIDE_MARK in record.name or not block:
            continue
        try:
            fragment = ConfigurationFragment.model_validate(block)
        except ValidationError:  # a store written by another sysops version: that plugin claims nothing
            problems.append(f"plugin {record.name}: unreadable configuration block in its stored manifest")
            continue
        owner = Owner(record.name, str(record.manifest.get("version", "")), fragment)
        claims[record.name] = fragment.section
        if fragment.section in SYSOPS_KEYS:
            problems.append(f"{owner} claims section {shown(fragment.section)}, which is sysops's own key")
        elif fragment.section in sections:
            problems.append(
                f"section {shown(fragment.section)} is claimed by both {sections[fragment.section]} and {owner}"
                " (take one of them down)"
            )
            contested.setdefault(fragment.section, []).append(problems[-1])
        else:
            sections[fragment.section] = owner
    return Owners(sections, problems, claims, contested)


def parse(text: str, file: str) -> tuple[dict[str, Any], list[str]]:
    """The file's top-level mapping (empty for an empty file), or the one problem that keeps it from being read."""
    try:
        data = safe_yaml.load(text)
    except safe_yaml.InputLimitError as exc:
        return {}, [f"{file}: {exc}"]
    except yaml.YAMLError as exc:
        return {}, [f"{file}: {safe_yaml.describe_yaml_error(exc)}"]
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        return {}, [f"{file}: expected a mapping of sections (got {shown(data)})"]
    return data, []


def _sysops_key_problem(file: str, key: str, value: Any) -> str | None:
    """The problem of sysops's own key, as discovery words it (core/installation_config.py), or None."""
    try:
        installation_config._plugin_dirs(Path(file), value)
    except ConfigFileError as error:
        return error.message
    return None


def section_problems(file: str, owner: Owner, value: Any) -> list[str]:
    """Every problem of one owned section's value (None: the section is absent)."""
    section = owner.fragment.section
    keys = owner.fragment.keys
    if value is None:
        value = {}
    if not isinstance(value, dict):
        return [
            f"{file}: key {shown(section)}: must be a mapping of the section's keys (got {shown(value)}); "
            f"owned by {owner}"
        ]
    problems: list[str] = []
    for key, item in value.items():
        where = shown(f"{section}.{key}")
        option = keys.get(key) if isinstance(key, str) else None
        if option is None:
            declared = ", ".join(sorted(keys)) or "none"
            problems.append(
                f"{file}: key {where}: not a key of section '{section}' (its keys: {declared}); owned by {owner}"
            )
            continue
        problem = option.problem(item) if item is not None else None
        if problem is not None:
            problems.append(f"{file}: key {where}: {problem}; owned by {owner}")
    for key, option in sorted(keys.items()):
        if option.required and value.get(key) is None and option.default is None:
            problems.append(f"{file}: key '{section}.{key}': required, but has no value; owned by {owner}")
    return problems


def problems(file: str, data: Mapping[str, Any], owners: Owners) -> list[str]:
    """Every problem of the configuration `data` read from `file`, one line each, in the file's order (then
    the required keys of sections the file lacks)."""
    found = list(owners.problems)
    for key, value in data.items():
        owner = owners.sections.get(key) if isinstance(key, str) else None
        if key in SYSOPS_KEYS:
            problem = _sysops_key_problem(file, key, value)
            if problem is not None:
                found.append(f"{problem}; owned by {SYSOPS_OWNER}")
        elif owner is not None:
            found.extend(section_problems(file, owner, value))
        else:
            claimed = ", ".join(sorted(owners.sections)) or "none"
            found.append(
                f"{file}: no installed plugin owns section {shown(key)} "
                f"(sections of installed plugins: {claimed}; sysops's own: {', '.join(SYSOPS_KEYS)})"
            )
    for section, owner in sorted(owners.sections.items()):
        if section not in data:
            found.extend(section_problems(file, owner, None))
    return found


def _row(key: str, option: ConfigOption, owner: str, section: Mapping[str, Any], name: str) -> dict[str, Any]:
    given = section.get(name)
    source: Source = "file" if given is not None else "default" if option.default is not None else "unset"
    return {
        "key": key,
        "value": given if given is not None else option.default,
        "default": option.default,
        "type": option.type,
        "owner": owner,
        "source": source,
        "help": option.help,
    }


def rows(data: Mapping[str, Any], owners: Owners) -> list[dict[str, Any]]:
    """Every declared key (sysops's, then each section's by name): value, default, type, owner, source, help."""
    found = [_row(key, option, SYSOPS_OWNER, data, key) for key, option in SYSOPS_KEYS.items()]
    for section, owner in sorted(owners.sections.items()):
        given = data.get(section)
        values = given if isinstance(given, dict) else {}
        for key, option in sorted(owner.fragment.keys.items()):
            found.append(_row(f"{section}.{key}", option, f"{owner.plugin} {owner.version}", values, key))
    return found


def merged_section(owner: Owner, data: Mapping[str, Any]) -> dict[str, Any]:
    """The owner's section with every declared key: its value in the file, else its default (None if neither)."""
    given = data.get(owner.fragment.section)
    values = given if isinstance(given, dict) else {}
    return {
        key: values[key] if values.get(key) is not None else option.default
        for key, option in sorted(owner.fragment.keys.items())
    }


class SystemConfig:
    """The host's view of the system configuration: the file at `path()`, owned as the store's plugins say."""

    def __init__(self, settings: Settings, plugins: Callable[[], list[PluginRecord]]) -> None:
        self._settings = settings
        self._plugins = plugins

    def read(self) -> tuple[str, str]:
        """The config file's path and text ("" when there is no file); ConfigFileError when it cannot be read."""
        path = config_path(self._settings)
        try:
            if not path.is_file() and os.environ.get(CONFIG_VARIABLE):
                raise ConfigFileError(f"{path}: no such configuration file (named by {CONFIG_VARIABLE})")
            return str(path), safe_yaml.read_text(path) if path.is_file() else ""
        except OSError as exc:
            raise ConfigFileError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
        except safe_yaml.InputLimitError as exc:
            raise ConfigFileError(f"{path}: {exc}") from None

    def validate(self, text: str, file: str) -> dict[str, Any]:
        """The problems of `text` (a config file the CLI read from `file`) against the installed plugins."""
        if len(text.encode(errors="replace")) > safe_yaml.MAX_BYTES:
            return {
                "file": file,
                "valid": False,
                "problems": [f"{file}: larger than {safe_yaml.MAX_BYTES // 1024} KiB"],
            }
        data, unreadable = parse(text, file)
        found = unreadable or problems(file, data, section_owners(self._plugins()))
        return {"file": file, "valid": not found, "problems": found}

    def show(self) -> dict[str, Any]:
        """The merged configuration: every declared key's row, plus the file's problems."""
        file, text = self.read()
        data, unreadable = parse(text, file)
        owners = section_owners(self._plugins())
        return {
            "file": file,
            "exists": Path(file).is_file(),
            "keys": rows(data, owners),
            "problems": unreadable or problems(file, data, owners),
        }

    def section(self, plugin: str) -> dict[str, Any]:
        """The section `plugin` owns, defaults merged in; ConfigFileError when it owns none or it has problems."""
        owners = section_owners(self._plugins())
        contested = owners.contested.get(owners.claims.get(plugin, ""))
        if contested:
            raise ConfigFileError("; ".join(contested))
        owner = next((found for found in owners.sections.values() if found.plugin == plugin), None)
        if owner is None:
            raise ConfigFileError(
                f"plugin {shown(plugin)} owns no section of the system configuration "
                "(a configuration plugin declares one under configuration: in plugin.yaml)"
            )
        file, text = self.read()
        data, unreadable = parse(text, file)
        found = unreadable or section_problems(file, owner, data.get(owner.fragment.section))
        if found:
            raise ConfigFileError(f"section '{owner.fragment.section}' is invalid: {'; '.join(found)}")
        return {"section": owner.fragment.section, "values": merged_section(owner, data)}
