"""Write a new plugin's files from the templates of its type (`templates/`, shipped as package data).

Templates are `string.Template` text (`${plugin}`, `${package}`, ...; `$$` is a literal `$`), so the Python,
YAML and Markdown they hold keep their braces. Every type has the same files: the common ones (manifest head,
pyproject.toml, README, .gitignore, .dockerignore, the package's `__init__.py`) and its own `plugin.py`,
`tests/test_plugin.py`, description, manifest lines and README section.
"""

from __future__ import annotations

from dataclasses import asdict
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports PLUGIN_TYPES when it builds its command tree: nothing heavy at import
    from sysops.scaffold.names import ScaffoldNames

#: The plugin types a scaffold exists for (docs/plugin-types.md), the first being the default.
PLUGIN_TYPES: tuple[str, ...] = ("command", "service", "integration", "configuration", "event")


def _templates() -> Traversable:
    return resources.files("sysops.scaffold").joinpath("templates")


def _text(template: Traversable, values: dict[str, str]) -> str:
    return Template(template.read_text(encoding="utf-8")).substitute(values)


def plugin_files(names: ScaffoldNames, plugin_type: str) -> dict[str, str]:
    """The new plugin's files, path relative to its directory -> text."""
    common, own = _templates() / "common", _templates() / plugin_type
    values = {**asdict(names), "type": plugin_type}
    values["description"] = _text(own / "description.tmpl", values).strip()
    values["type_manifest"] = _text(own / "manifest.yaml.tmpl", values).rstrip("\n")
    values["type_readme"] = _text(own / "readme.md.tmpl", values)
    return {
        "plugin.yaml": _text(common / "plugin.yaml.tmpl", values),
        "pyproject.toml": _text(common / "pyproject.toml.tmpl", values),
        "README.md": _text(common / "README.md.tmpl", values),
        ".gitignore": _text(common / "gitignore.tmpl", values),
        ".dockerignore": _text(common / "dockerignore.tmpl", values),
        f"{names.package}/__init__.py": _text(common / "__init__.py.tmpl", values),
        f"{names.package}/plugin.py": _text(own / "plugin.py.tmpl", values),
        "tests/test_plugin.py": _text(own / "test_plugin.py.tmpl", values),
    }


def write_plugin(names: ScaffoldNames, plugin_type: str, directory: Path) -> list[Path]:
    """Create `directory` (it must not exist) with the plugin's files; the paths written, in order."""
    files = plugin_files(names, plugin_type)
    directory.mkdir(parents=True)
    written = []
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
