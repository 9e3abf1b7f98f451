"""The "available plugins" page: the example plugins of this repository and what the configured indexes list.

Examples are read from `examples/*/plugin.yaml` with the same loader `plugin up` uses (so a broken example
breaks the docs build), and their commands from the `@plugin_command("...")` decorators in their code, found
by parsing it (plugin code is never imported here). Indexes are those configured in the builder's
`SYSOPS_HOME` (`sysops index add`); each one's newest versions are read through TUF like `plugin search`
does, and an index that cannot be read is named on the page with the reason rather than failing the build.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from gen_docs.markdown import cell, code, generated_from, paragraph, table


@dataclass(frozen=True)
class ExamplePlugin:
    """What the page shows of one example: its manifest's facts and its commands."""

    directory: str
    name: str
    version: str
    description: str
    types: list[str]
    permissions: list[str]
    commands: list[str]
    has_tests: bool


@dataclass(frozen=True)
class IndexListing:
    """One configured index: the newest version of each plugin it lists, or why it could not be read."""

    name: str
    tier: str
    rows: list[dict[str, str]]
    problem: str = ""


def _decorated_commands(tree: ast.AST) -> list[str]:
    """Names given to `@plugin_command("name", ...)` in one module."""
    names = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            if (
                isinstance(decorator, ast.Call)
                and getattr(decorator.func, "id", getattr(decorator.func, "attr", "")) == "plugin_command"
                and decorator.args
                and isinstance(decorator.args[0], ast.Constant)
                and isinstance(decorator.args[0].value, str)
            ):
                names.append(decorator.args[0].value)
    return names


def commands_in(plugin_dir: Path) -> list[str]:
    """Every command a plugin's code declares (tests and build output left out), sorted."""
    found: set[str] = set()
    for source in plugin_dir.rglob("*.py"):
        parts = source.relative_to(plugin_dir).parts
        if parts[0] in ("tests", "build", "dist") or parts[-1].startswith("test_"):
            continue
        found.update(_decorated_commands(ast.parse(source.read_text(encoding="utf-8"), filename=str(source))))
    return sorted(found)


def read_examples(root: Path) -> list[ExamplePlugin]:
    """Every `examples/*/plugin.yaml` under `root`, validated by the manifest loader."""
    from sysops.core.manifest import load_manifest

    found = []
    for manifest_file in sorted((root / "examples").glob("*/plugin.yaml")):
        manifest = load_manifest(manifest_file.parent)
        found.append(
            ExamplePlugin(
                directory=manifest_file.parent.relative_to(root).as_posix(),
                name=manifest.name,
                version=manifest.version,
                description=manifest.description,
                types=[str(getattr(kind, "value", kind)) for kind in manifest.types],
                permissions=list(manifest.permissions),
                commands=commands_in(manifest_file.parent),
                has_tests=any(manifest_file.parent.glob("tests/test_*.py")),
            )
        )
    return found


def read_indexes(home: Path) -> list[IndexListing]:
    """What each index configured in `home` lists (newest version of each plugin), or its one-line error."""
    from sysops.distribution import index_client
    from sysops.distribution.index_registry import load_indexes
    from sysops.errors import SysopsError

    listings = []
    for index in load_indexes(home):
        try:
            newest = {entry.name: entry for entry in index_client.index_entries(home, index)}  # oldest first
        except SysopsError as error:
            listings.append(IndexListing(index.name, index.tier, [], problem=str(error)))
            continue
        listings.append(IndexListing(index.name, index.tier, [entry.as_row() for entry in newest.values()]))
    return listings


def _examples_section(examples: list[ExamplePlugin]) -> str:
    rows = [
        [
            code(plugin.name),
            plugin.version,
            cell(", ".join(plugin.types)),
            cell(", ".join(code(name) for name in plugin.commands)),
            cell(", ".join(code(name) for name in plugin.permissions)),
            cell(plugin.description),
            code(plugin.directory),
            code(f"pytest {plugin.directory}") if plugin.has_tests else "-",
        ]
        for plugin in examples
    ]
    return "\n".join(
        [
            "## Examples in this repository\n",
            "Bring one up with `sysops plugin up examples/DIR`. The tests column says how to run the tests an "
            "example has (written with the SDK's test kit).\n",
            table(["plugin", "version", "types", "commands", "permissions", "description", "directory", "tests"], rows),
        ]
    )


def _indexes_section(listings: list[IndexListing]) -> str:
    parts = ["## From the configured indexes\n"]
    if not listings:
        parts.append(
            "No index was configured where this site was built. Add one with `sysops index add NAME URL --root "
            "FILE --tier TIER` and list its plugins with `sysops plugin search TERM` ([Plugin indexes](indexes.md)).\n"
        )
    for listing in listings:
        parts.append(f"### {listing.name} ({listing.tier})\n")
        if listing.problem:
            parts.append(paragraph(f"Could not be read when this site was built: {listing.problem}"))
            continue
        rows = [
            [code(row["name"]), row["version"], row["stage"], cell(row["description"]), code(row["spec"])]
            for row in listing.rows
        ]
        parts.append(table(["plugin", "version", "stage", "description", "install"], rows) if rows else "Empty.\n")
    return "\n".join(parts)


def render(examples: list[ExamplePlugin], listings: list[IndexListing]) -> str:
    """The whole page."""
    return "\n".join(
        [
            "# Available plugins\n",
            generated_from("`examples/*/plugin.yaml`, the examples' code and the configured indexes"),
            _examples_section(examples),
            _indexes_section(listings),
        ]
    )


def generate(root: Path, home: Path) -> str:
    """The page for the repository at `root` and the indexes configured in `home`."""
    return render(read_examples(root), read_indexes(home))
