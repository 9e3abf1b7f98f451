"""A private copy of a plugin's tests/ for `sysops plugin test`, made without following any link.

DIR/tests is untrusted: mounting it as it is would let `tests -> /etc` (or a link inside it) show any host
directory to the test container. The copy refuses a `tests` that is itself a symbolic link, lists tests/ by
the image context's rules (imaging/context.py: links that leave tests/ or lead nowhere, devices, FIFOs and
hard links to files of another owner are refused; links that stay inside are kept as links) and reads each
file through `O_NOFOLLOW` descriptors. The copy is readable by the plugin's uid (it is mounted read-only)
and lives in a private directory named after the process that made it, so a run that was killed leaves a
copy the next run removes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

import pathspec

from sysops.errors import PluginDefinitionError
from sysops.imaging.context import IgnoreRules, named, open_plugin_file, plugin_entries
from sysops.private_paths import ensure_private_dir
from sysops.processes import process_alive

#: Prefix of a copy's directory; the creating process's id follows it.
COPY_PREFIX = "tests-"
#: Only the built-in ignore rules apply: tests/ may be in .dockerignore (kept out of the image) and still run.
_BUILT_IN_RULES = IgnoreRules(gitignore=pathspec.GitIgnoreSpec.from_lines([]), dockerignore=pathspec.PathSpec([]))


def copy_tests(plugin_dir: Path, work_dir: Path) -> Path:
    """Copy `plugin_dir`/tests into a new directory under `work_dir` (readable by any uid) and return it."""
    tests = plugin_dir / "tests"
    if tests.is_symlink():
        raise PluginDefinitionError(
            f"{named(plugin_dir, PurePosixPath('tests'))}: is a symbolic link; the tests are not run through one",
            hint="make tests/ a real directory inside the plugin directory",
        )
    entries = plugin_entries(tests, _BUILT_IN_RULES)
    ensure_private_dir(work_dir)
    remove_stale_copies(work_dir)
    copy = Path(tempfile.mkdtemp(prefix=f"{COPY_PREFIX}{os.getpid()}-", dir=work_dir))
    try:
        os.chmod(copy, 0o755)  # mounted for the plugin's uid; work_dir itself stays private
        for entry in entries:
            target = copy / entry.relative
            if entry.kind == "dir":
                target.mkdir()
                os.chmod(target, 0o755)  # whatever the umask (a user's 077): the plugin's uid reads the copy
            elif entry.kind == "link":
                os.symlink(entry.link_target, target)
            else:
                with open_plugin_file(tests, entry.relative, entry.identity) as source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink)
                os.chmod(target, 0o644)
    except BaseException:
        shutil.rmtree(copy, ignore_errors=True)
        raise
    return copy


def remove_stale_copies(work_dir: Path) -> None:
    """Remove the copies whose creating process is gone (a run killed before it could clean up)."""
    for entry in work_dir.glob(f"{COPY_PREFIX}*"):
        pid = entry.name.removeprefix(COPY_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
