"""`sysops plugin test DIR`: run a plugin's tests inside its own image, where its code will really run.

    sysops plugin test ./my-plugin              build the image (the normal build), run tests/ with pytest in it
    sysops plugin test ./my-plugin -- -k greet  arguments after `--` go to pytest

The image is built exactly as `plugin up` builds it (same context, requirements, static checks, tag and
signature), so the tests import the code with the requirements the plugin ships with, on the base image's
Python and SDK. pytest and the test kit's requirements are fetched on the host (imaging/test_kit_site.py) and
mounted read-only, as is a private copy of the plugin's tests/ made without following any link
(imaging/tests_copy.py: a `tests` that is a symbolic link is refused, exit 4), over the one in the image,
removed afterwards; the container is hardened and limited like an instance (runtime/docker/one_off.py: the
plugin's uid, its manifest's CPU, memory and process limits) and has no network; after --timeout seconds (600)
it is stopped and removed, exit 10. The tests use the SDK's `plugin` fixture in-process inside the container.
The exit code is pytest's (0 passed, 1 failed, 2 interrupted, 4 usage, 5 nothing collected); failing to build
is exit 4 as for `plugin up`. pytest's output is the plugin's text: on a terminal it is decoded as UTF-8 (bad
bytes replaced) and its control characters escaped unless SYSOPS_RAW_OUTPUT=1 (as cli/output.py `write_result`
does for a command's result); to a pipe or a file it is written byte for byte. pytest runs with --color=no.
SIGTERM and SIGHUP end the run as Ctrl-C does (the container and the tests' copy are removed); what a
SIGKILLed run left is removed by the next run. The run's image is removed afterwards unless a revision or an
instance of the installation uses it (or, the engine refusing, a container), so runs pile up no images.
"""

from __future__ import annotations

import codecs
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sysops.cli.output import RAW_OUTPUT_VARIABLE
from sysops.cli.plugin_cmd import progress
from sysops.errors import UsageError
from sysops.safe_text import escape_controls

if TYPE_CHECKING:
    from sysops.settings import Settings

#: Where the plugin's code is in its image, and where the tests and pytest are mounted.
PLUGIN_ROOT = "/plugin"
TESTS_IN_CONTAINER = f"{PLUGIN_ROOT}/tests"
KIT_IN_CONTAINER = "/opt/sysops-test-kit"
#: pytest's options before the plugin's: no cache in the read-only tree, no colour codes, the plugin as root.
#: Seconds the tests may run by default.
DEFAULT_TIMEOUT_S = 600.0
PYTEST_OPTIONS = ["-p", "no:cacheprovider", "--color=no", "--rootdir", PLUGIN_ROOT]


def test_command(
    path: Annotated[Path, typer.Argument(help="Plugin directory (with plugin.yaml and tests/)", show_default=False)],
    pytest_args: Annotated[
        list[str] | None, typer.Argument(help="Arguments for pytest, after `--`", show_default=False)
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds the tests may run; then they are stopped (exit 10)")
    ] = DEFAULT_TIMEOUT_S,
) -> None:
    """Build a plugin's image and run its tests/ with pytest inside a container of it; exit with pytest's code."""
    from sysops.core.code_checks import check_plugin_code
    from sysops.core.manifest import load_manifest
    from sysops.core.rollout import limits_for
    from sysops.imaging.plugin_image import plugin_build
    from sysops.imaging.test_kit_site import test_kit_site
    from sysops.imaging.tests_copy import copy_tests
    from sysops.runtime.base import LABEL_INSTALLATION, LABEL_PLUGIN, plugin_uid
    from sysops.runtime.docker.one_off import (
        OneOffRun,
        remove_image_unless_used,
        remove_stale_one_offs,
        run_to_end,
    )
    from sysops.runtime.factory import docker_driver
    from sysops.settings import Settings

    plugin_dir = path.resolve()
    manifest = load_manifest(plugin_dir)
    if not (plugin_dir / "tests").is_dir() and not (plugin_dir / "tests").is_symlink():
        raise UsageError(f"{plugin_dir}: no tests/ directory", hint="put the plugin's pytest tests in DIR/tests")
    settings = Settings()
    check_plugin_code(settings.home, plugin_dir, manifest, progress)
    labels = {LABEL_INSTALLATION: settings.installation_id, LABEL_PLUGIN: manifest.name}
    with signals_interrupt():
        tests = copy_tests(plugin_dir, settings.cache_dir / "test-runs")
        image_tag = ""
        try:
            driver = docker_driver()
            remove_stale_one_offs(driver.client, labels)
            with plugin_build(
                driver,
                plugin_dir,
                manifest,
                base_image=settings.base_image,
                installation_id=settings.installation_id,
                cache_dir=settings.cache_dir,
                progress=progress,
            ) as build:
                image = build.build()
                image_tag = build.tag
            progress("fetching pytest for the tests (on the host; the container has no network)")
            kit = test_kit_site(settings.cache_dir)
            progress(f"running {manifest.name}'s tests in {image.tag}")
            run = OneOffRun(
                image=image.id,
                entrypoint=["python", "-m", "pytest"],
                command=[*PYTEST_OPTIONS, TESTS_IN_CONTAINER, *(pytest_args or [])],
                uid=plugin_uid(settings.installation_id, manifest.name),
                limits=limits_for(manifest),
                timeout_s=timeout,
                what=f"{manifest.name}'s tests",
                read_only_mounts={str(tests): TESTS_IN_CONTAINER, str(kit): KIT_IN_CONTAINER},
                environment={
                    "PYTHONPATH": f"{PLUGIN_ROOT}:{PLUGIN_ROOT}/src:{KIT_IN_CONTAINER}",
                    "PYTHONDONTWRITEBYTECODE": "1",
                    "SYSOPS_TEST_MODE": "inprocess",
                    "HOME": "/tmp",
                },
                labels=labels,
            )
            sys.stdout.flush()
            code = run_to_end(driver.client, run, output_writer())
        finally:
            shutil.rmtree(tests, ignore_errors=True)
            if image_tag and not stored_image_ids(settings, manifest.name) & {image.id}:
                remove_image_unless_used(driver.client, image_tag)
    if code:
        progress(f"{manifest.name}'s tests failed (pytest exit {code})")
    raise typer.Exit(code)


def output_writer() -> Callable[[bytes], None]:
    """Where the test container's output goes: escaped text on a terminal (unless raw output was asked for),
    the bytes as they are otherwise."""
    if not sys.stdout.isatty() or os.environ.get(RAW_OUTPUT_VARIABLE) == "1":
        return _write_bytes
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write_escaped(chunk: bytes) -> None:
        sys.stdout.write(escape_controls(decoder.decode(chunk)))
        sys.stdout.flush()

    return write_escaped


def _write_bytes(chunk: bytes) -> None:
    sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt while in the block (so its cleanup runs); restored after."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    handled = (signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, interrupt) for signum in handled}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stored_image_ids(settings: Settings, plugin: str) -> set[str]:
    """The images the plugin's revisions and instances use in the local store (none before its first `up`)."""
    from sysops.store import Store

    if not settings.store_path.exists():
        return set()
    store = Store(settings.store_path)
    try:
        return {r.image_id for r in store.revisions(plugin)} | {i.image_id for i in store.instances(plugin)}
    finally:
        store.close()
