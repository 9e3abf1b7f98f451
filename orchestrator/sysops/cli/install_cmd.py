"""`sysops plugin install|upgrade|uninstall`: plugins from pip, git, local paths, OCI references and indexes.

Each command fetches (distribution/sources.py), brings the plugin up through the same plan as `plugin up`
(its requirements first), and only then keeps the fetched package and its install record
(distribution/installs.py): a failed install or upgrade leaves the installed state as it was.
`install -e PATH` stays in the foreground and rolls on every change, like `plugin up --watch`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer

from sysops.cli.plugin_cmd import control_client, progress, up
from sysops.cli.registry_cmd import install_oci_ref
from sysops.distribution.index_client import find
from sysops.distribution.installs import InstallRecord, load_installs, remove_install, save_install
from sysops.distribution.packages import package_dir_of
from sysops.distribution.sources import (
    Fetched,
    SpecKind,
    classify,
    fetch_local,
    fetch_with_pip,
    is_project,
    refuse_another_source,
    requirement_of,
)
from sysops.distribution.upgrade import choose_upgrade
from sysops.errors import ExitCode, NotFoundError, SysopsError, UsageError
from sysops.private_paths import ensure_private_dir
from sysops.settings import Settings

#: The trust tier of each source kind that is not an index entry (an index entry carries its index's tier).
TIER_OF_KIND = {"pip": "community", "git": "community", "oci": "community", "path": "private", "editable": "private"}
IndexUrlOption = Annotated[
    str, typer.Option("--index-url", help="Package index (PEP 503 simple) instead of pip's configured one")
]
INSTALL_LOCK = "install.lock"
PreOption = Annotated[bool, typer.Option("--pre", help="Also take experimental (and pre-release) versions")]


@contextlib.contextmanager
def installing(home: Path) -> Iterator[None]:
    """One install, upgrade or uninstall at a time per installation (they replace packages and records)."""
    from sysops.core.locks import held_lock

    with held_lock(ensure_private_dir(home) / INSTALL_LOCK):
        yield


def _bring_up(fetched: Fetched) -> None:
    """Build and start the fetched plugin through `plugin up DIR` itself (requirements first), until ready."""
    up(str(fetched.plugin_dir), watch=False, runtime=None)


def _bring_up_and_keep(home: Path, fetched: Fetched, record_of: Callable[[Fetched], InstallRecord]) -> Fetched:
    """Put the fetched package in its place, record it (the roll's trust gate reads the tier from the record),
    and bring the plugin up from there. A failure puts back the package and the record it replaced (or
    removes them when it replaced none) and re-raises."""
    placed = fetched.place(home)
    record = record_of(placed.fetched)
    previous = load_installs(home).get(record.name)
    save_install(home, record)
    try:
        _bring_up(placed.fetched)
    except BaseException:
        if _held(home, placed.fetched):
            placed.keep()  # `plugin approve` rolls this directory again once the operator agrees
            raise
        placed.restore()
        if previous is None:
            remove_install(home, record.name)
        else:
            save_install(home, previous)
        raise
    placed.keep()
    return placed.fetched


def _held(home: Path, fetched: Fetched) -> bool:
    """Whether the roll of `fetched` was held for approval (it asks for more than the version serving)."""
    from sysops.core.held_upgrades import load_held

    held = load_held(home, fetched.manifest.name)
    return held is not None and held.version == fetched.manifest.version


def _fetch(home: Path, spec: str, kind: SpecKind, *, index_url: str, pre: bool) -> Fetched:
    if kind == "editable":
        return fetch_local(Path(spec))
    if kind == "path":
        path = Path(spec).expanduser()
        if is_project(path):
            return fetch_with_pip(home, str(path.resolve()), pre=pre, from_source=True)
        return fetch_local(path)
    return fetch_with_pip(home, spec, index_url=index_url, pre=pre, from_source=kind == "git")


def _record(
    spec: str, kind: SpecKind, fetched: Fetched, *, tier: str = "", index: str = "", image: str = "", directory: str
) -> InstallRecord:
    return InstallRecord(
        name=fetched.manifest.name,
        spec=spec,
        kind=kind,
        version=fetched.manifest.version,
        tier=tier or TIER_OF_KIND[kind],
        directory=directory,
        image=image,
        index=index,
    )


def _install(home: Path, spec: str, *, editable: bool, index_url: str, pre: bool) -> Fetched | None:
    """Fetch, record and bring up SPEC; the plugin directory fetched (None for an image from a registry)."""
    kind = classify(spec, editable=editable)
    if kind == "oci":
        install_oci_ref(spec)
        return None
    tier = index_name = ""
    fetch_spec = spec
    if kind in ("path", "editable"):
        spec = str(Path(spec).expanduser().resolve())  # recorded absolute: upgrade runs from anywhere
    if kind == "pip":
        requirement = requirement_of(spec)
        hit = find(home, requirement.name, requirement.specifier, include_experimental=pre)
        if hit is not None:
            if hit.is_oci:
                install_oci_ref(hit.spec, tier=hit.tier, index=hit.index)
                return None
            kind, tier, index_name, fetch_spec = "index", hit.tier, hit.index, hit.spec
    fetched = _fetch(home, fetch_spec, kind, index_url=index_url, pre=pre)
    try:
        refuse_another_source(home, fetched)
    except UsageError:
        fetched.discard()
        raise
    chosen: SpecKind = kind

    def record_of(placed: Fetched) -> InstallRecord:
        return _record(spec, chosen, placed, tier=tier, index=index_name, directory=str(placed.plugin_dir))

    return _bring_up_and_keep(home, fetched, record_of)


def install(
    spec: Annotated[
        str, typer.Argument(metavar="SPEC", help="NAME[==VERSION], git+URL@REF, PATH, or REGISTRY/REPO@sha256:...")
    ],
    editable: Annotated[
        bool, typer.Option("-e", "--editable", help="Use the local directory in place and roll on every change")
    ] = False,
    index_url: IndexUrlOption = "",
    pre: PreOption = False,
) -> None:
    """Install a plugin from a package index, git, a local path or an OCI registry, and start it."""
    home = Settings().home
    with installing(home):
        kept = _install(home, spec, editable=editable, index_url=index_url, pre=pre)
    if editable and kept is not None:
        from sysops.core.watch import watch_and_roll

        watch_and_roll(control_client(), kept.plugin_dir, progress)


def _installed(home: Path, name: str) -> InstallRecord:
    record = load_installs(home).get(name)
    if record is None:
        raise NotFoundError(
            f"plugin {name!r} was not installed with `sysops plugin install`",
            hint="`sysops plugin ls` lists running plugins; `plugin down NAME` stops one brought up from a directory",
        )
    return record


def upgrade(
    name: Annotated[str, typer.Argument(help="Installed plugin name")],
    pre: PreOption = False,
    allow_breaking: Annotated[
        bool, typer.Option("--allow-breaking", help="Cross a version the plugin marks as breaking")
    ] = False,
    index_url: IndexUrlOption = "",
) -> None:
    """Move an installed plugin to the newest version its source offers (skipping experimental versions)."""
    home = Settings().home
    with installing(home):
        record = _installed(home, name)
        choice = choose_upgrade(home, record, pre=pre, allow_breaking=allow_breaking, index_url=index_url)
        for skipped in choice.skipped:
            progress(f"skipped {name} {skipped}")
        for warning in choice.warnings:
            progress(f"warning: {warning}")
        if choice.fetched is None:
            progress(f"{name} {record.version} is up to date")
            return

        def upgraded(placed: Fetched) -> InstallRecord:
            return dataclasses.replace(record, version=placed.manifest.version, directory=str(placed.plugin_dir))

        _bring_up_and_keep(home, choice.fetched, upgraded)


def uninstall(
    name: Annotated[str, typer.Argument(help="Installed plugin name")],
    purge: Annotated[bool, typer.Option("--purge", help="Also remove its images and data volume")] = False,
) -> None:
    """Take an installed plugin down and remove its package and install record."""
    home = Settings().home
    with installing(home):
        record = _installed(home, name)
        try:
            control_client().down(name, purge=purge)
        except SysopsError as error:  # the control API's 'no plugin named' arrives as a SysopsError with code 8
            if error.exit_code != ExitCode.NOT_FOUND:
                raise  # not running: only the package and the record are left to remove
        package = package_dir_of(home, Path(record.directory)) if record.directory else None
        if package is not None:
            shutil.rmtree(package)
        remove_install(home, name)
        progress(f"{name} uninstalled")


def print_outdated(output: str) -> None:
    """`plugin ls --outdated`: the installed plugins whose source offers a newer version."""
    from sysops.cli.output import emit
    from sysops.distribution.upgrade import outdated

    home = Settings().home
    rows = [dataclasses.asdict(row) for row in outdated(home, list(load_installs(home).values()))]
    emit(rows, output, ["name", "installed", "latest", "kind", "note"])
