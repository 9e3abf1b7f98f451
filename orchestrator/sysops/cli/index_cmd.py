"""`sysops index add|ls|remove|publish` and `sysops plugin search TERM`: the plugin indexes an installation trusts.

Users add an index by its URL and the root metadata its maintainer hands out (`--root`), choosing the tier
its plugins get; `add` reads the index once through TUF so a wrong root, URL or token fails then, not at
the first install. Authors publish with `index publish DIR` (distribution/index_writer.py). What an index
says (names, descriptions, specs) is untrusted text: tables escape control characters on a terminal.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from sysops.cli.output import emit
from sysops.cli.plugin_cmd import Output, OutputOption
from sysops.settings import Settings

index_app = typer.Typer(
    help="Plugin indexes (signed TUF repositories): add, ls, remove, publish.", no_args_is_help=True
)

INDEX_COLUMNS = ("name", "tier", "url", "token_file")
SEARCH_COLUMNS = ("name", "version", "index", "tier", "stage", "description")
NO_INDEXES = "no indexes; `sysops index add NAME URL --root FILE --tier T` adds one\n"


def _home() -> Path:
    return Settings().ensure_home()


@index_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="A name for the index (lower-case letters, digits, '-')")],
    url: Annotated[str, typer.Argument(help="Base URL of the index's TUF repository (http(s):// or file://)")],
    root: Annotated[Path, typer.Option("--root", help="The index's root.json, from its maintainer")],
    tier: Annotated[str, typer.Option("--tier", help="Tier of its plugins: official, community or private")],
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="File (0600) holding the bearer token of a private index")
    ] = None,
) -> None:
    """Trust an index: check it through its root metadata, then remember it."""
    from sysops.distribution.index_client import bootstrap_index
    from sysops.distribution.index_registry import (
        IndexConfig,
        add_index,
        check_index_name,
        check_index_url,
        check_tier,
        load_indexes,
    )
    from sysops.errors import UsageError

    home = _home()
    config = IndexConfig(
        name=check_index_name(name),
        url=check_index_url(url),
        tier=check_tier(tier),
        token_file=str(token_file.absolute()) if token_file else "",
    )
    if any(existing.name == name for existing in load_indexes(home)):
        raise UsageError(f"an index named {name!r} is already configured", hint="`sysops index remove` it first")
    entries = bootstrap_index(home, config, root)
    add_index(home, config)
    plugins = len({entry.name for entry in entries})
    sys.stdout.write(f"index {name} added: {plugins} plugin(s), tier {tier}\n")


@index_app.command("ls")
def ls(output: OutputOption = Output.TEXT) -> None:
    """List the configured indexes, in the order `plugin install` asks them."""
    from dataclasses import asdict

    from sysops.distribution.index_registry import load_indexes

    rows = [asdict(config) for config in load_indexes(Settings().home)]
    if not rows and not output.is_data:
        sys.stdout.write(NO_INDEXES)
        return
    emit(rows, output, INDEX_COLUMNS)


@index_app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="Index name")]) -> None:
    """Forget an index, its trusted root and its caches (installed plugins stay)."""
    from sysops.distribution.index_registry import check_index_name, remove_index

    remove_index(Settings().home, check_index_name(name))
    sys.stdout.write(f"index {name} removed\n")


@index_app.command("publish")
def publish(
    directory: Annotated[Path, typer.Argument(help="Index directory: index.json, keys/, repository/")],
    targets_days: Annotated[int, typer.Option("--targets-days", min=1, help="Days the targets stay valid")] = 90,
    snapshot_days: Annotated[int, typer.Option("--snapshot-days", min=1, help="Days the snapshot stays valid")] = 7,
    timestamp_days: Annotated[
        int, typer.Option("--timestamp-days", min=1, help="Days the timestamp stays valid (freshness)")
    ] = 1,
    timestamp_only: Annotated[
        bool, typer.Option("--timestamp-only", help="Only renew the timestamp (a periodic job)")
    ] = False,
    add_plugin: Annotated[
        Path | None, typer.Option("--add", help="A plugin directory whose plugin.yaml version to list first")
    ] = None,
    spec: Annotated[str, typer.Option("--spec", help="With --add: pip requirement or OCI ref by digest")] = "",
    image_digest: Annotated[str, typer.Option("--image-digest", help="With --add: its signed image's digest")] = "",
) -> None:
    """Sign DIR/index.json into DIR/repository (creating keys and the repository the first time).

    With --add PLUGIN_DIR --spec SPEC, first list that plugin's version (from its plugin.yaml) in DIR/index.json.
    """
    from sysops.distribution.index_writer import Expiry, IndexRepository
    from sysops.errors import UsageError

    expiry = Expiry(
        targets=timedelta(days=targets_days),
        snapshot=timedelta(days=snapshot_days),
        timestamp=timedelta(days=timestamp_days),
    )
    repository = IndexRepository(directory)
    if timestamp_only:
        if not repository.exists():
            raise UsageError(f"{directory}: no index repository yet", hint="publish it once without --timestamp-only")
        sys.stdout.write(f"timestamp renewed: version {repository.resign_timestamp(expiry=expiry)}\n")
        return
    if add_plugin is not None:
        from sysops.core.manifest import load_manifest

        if not spec:
            raise UsageError("--add needs --spec: the pip requirement or OCI ref by digest users install it by")
        repository.add_version(load_manifest(add_plugin), spec, image_digest)
    elif spec or image_digest:
        raise UsageError("--spec and --image-digest go with --add PLUGIN_DIR")
    document = repository.read_source()  # checked before anything is created or signed
    if not repository.exists():
        IndexRepository.create(directory, expiry=expiry)
        sys.stdout.write(
            f"created keys in {repository.keys_dir} (keep them secret) and the repository {repository.repository_dir}\n"
        )
    version = repository.publish(document, expiry=expiry)
    sys.stdout.write(
        f"published {repository.source_file} as targets version {version}; serve {repository.repository_dir}; "
        f"users add it with --root {repository.root_file}\n"
    )


def search(
    term: Annotated[str, typer.Argument(help="Text to look for in plugin names and descriptions")],
    output: OutputOption = Output.TEXT,
) -> None:
    """Search the configured indexes for plugins (newest version of each)."""
    from sysops.distribution.index_client import search as search_indexes
    from sysops.distribution.index_registry import load_indexes

    home = Settings().home
    rows = [entry.as_row() for entry in search_indexes(home, term)]
    if not rows and not output.is_data:
        configured = bool(load_indexes(home))
        sys.stdout.write(f"no plugin matches {term!r}\n" if configured else NO_INDEXES)
        return
    emit(rows, output, SEARCH_COLUMNS)
