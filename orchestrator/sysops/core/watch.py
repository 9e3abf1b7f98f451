"""`sysops plugin up PATH --watch`: roll the plugin on every relevant change of its directory.

watchfiles debounces bursts of writes (an editor's save is several events); what the image leaves out
(caches, `.git`, editor swap files, the plugin's `.dockerignore` and `.gitignore`) is ignored, with the
rules re-read after each roll. A failed roll is reported and the watch goes on: the old version keeps
serving, and the next save tries again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from sysops.errors import SysopsError
from sysops.imaging.context import IgnoreRules

if TYPE_CHECKING:
    from sysops.core.operations import PluginOperations


def watch_and_roll(
    orchestrator: PluginOperations, path: Path, progress: Callable[[str], None], *, debounce_ms: int = 150
) -> None:
    """Block, rolling the plugin at `path` after each change, until interrupted."""
    from watchfiles import watch

    root = path.resolve()
    rules = IgnoreRules.load(root)

    def relevant(change: object, changed_path: str) -> bool:
        relative = PurePosixPath(Path(changed_path).relative_to(root).as_posix())
        return not rules.ignores(relative, is_dir=Path(changed_path).is_dir())

    progress(f"watching {root} (Ctrl-C to stop)")
    for _changes in watch(root, watch_filter=relevant, debounce=debounce_ms, step=50, rust_timeout=0):
        try:
            rules = IgnoreRules.load(root)
            instance, changed = orchestrator.up(root)
        except SysopsError as error:
            progress(f"reload failed, previous version keeps serving: {error}")
            for line in error.details.splitlines()[-10:]:
                progress(f"  {line}")
            continue
        if changed:
            progress(f"{instance.plugin} {instance.version} serving (revision {instance.revision})")
