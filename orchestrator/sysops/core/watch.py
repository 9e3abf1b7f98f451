"""`sysops plugin up PATH --watch`: roll the plugin on every relevant change of its directory.

watchfiles groups bursts of writes (an editor's save is several events): it reports once no new event came
for `step_ms` (20 ms: an editor's write, rename and chmod of one save land within a few milliseconds), or
after `debounce_ms` at most while events keep coming. What the image leaves out
(caches, `.git`, editor swap files, the plugin's `.dockerignore` and `.gitignore`) is ignored, with the
rules re-read after each roll. A failed roll is reported and the watch goes on: the old version keeps
serving, and the next save tries again. Each successful reload prints one line with its breakdown (detect,
build, start, ready, switch: core/reload_timing.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sysops.core.reload_timing import ReloadTimer, newest_change
from sysops.errors import SysopsError
from sysops.imaging.context import IgnoreRules

if TYPE_CHECKING:
    from sysops.core.operations import PluginOperations
    from sysops.store import InstanceRecord


def watch_and_roll(
    orchestrator: PluginOperations,
    path: Path,
    progress: Callable[[str], None],
    *,
    debounce_ms: int = 150,
    step_ms: int = 20,
) -> None:
    """Block, rolling the plugin at `path` after each change, until interrupted."""
    from watchfiles import watch

    root = path.resolve()
    rules = IgnoreRules.load(root)

    def relevant(change: object, changed_path: str) -> bool:
        relative = PurePosixPath(Path(changed_path).relative_to(root).as_posix())
        return not rules.ignores(relative, is_dir=Path(changed_path).is_dir())

    announced = False
    # "watching" is said on the generator's first yield, when the watcher runs: said before it, a save made
    # at once was never seen. The timeout makes that first yield come within a quarter of a second.
    for changes in watch(
        root, watch_filter=relevant, debounce=debounce_ms, step=step_ms, rust_timeout=250, yield_on_timeout=True
    ):
        if not announced:
            progress(f"watching {root} (Ctrl-C to stop)")
            announced = True
        if not changes:
            continue
        timer = ReloadTimer(changed_at=newest_change(changed_path for _, changed_path in changes))
        stamped = timer.watching(progress)
        try:
            rules = IgnoreRules.load(root)
            instance, changed = _up(orchestrator, root, stamped)
        except SysopsError as error:
            progress(f"reload failed, previous version keeps serving: {error}")
            for line in error.details.splitlines()[-10:]:
                progress(f"  {line}")
            continue
        if changed:
            progress(f"{instance.plugin} {instance.version} serving (revision {instance.revision})")
            progress(timer.line())


def _up(orchestrator: PluginOperations, root: Path, progress: Callable[[str], None]) -> tuple[InstanceRecord, bool]:
    """One roll with the door's progress lines going through `progress` for its time (the control-API client
    streams the host's lines to its `progress` attribute; a door without one is called as it is)."""
    door: Any = orchestrator
    previous = getattr(door, "progress", None)
    if previous is None:
        return orchestrator.up(root)
    door.progress = progress
    try:
        return orchestrator.up(root)
    finally:
        door.progress = previous
