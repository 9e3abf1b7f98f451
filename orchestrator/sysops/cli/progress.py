"""How long operations (builds, rollouts, `down`) show their progress: a rich spinner and bar, or plain lines.

On a terminal (stderr a tty, NO_COLOR unset) `progress_reporter` draws a live spinner with the current step
and the elapsed time, and a bar once a build says `Step N/M`; every message is still printed as a line
above it, so nothing that plain output says is lost. Anywhere else (a pipe, CI, NO_COLOR) each message is
one plain line on stderr, as it always was. rich is imported only in the terminal case. Messages can quote
a plugin (build output, errors): their control characters are escaped and rich shows them as plain text,
never as markup.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sysops.cli.output import fancy_terminal
from sysops.safe_text import escape_controls

#: Progress callback: one message per call.
Report = Callable[[str], None]
#: A step of the classic Docker builder (`Step 3/9 : RUN ...`): drives the bar.
BUILD_STEP = re.compile(r"\s*Step (\d+)/(\d+)\b")
#: Longest current step shown beside the spinner (the full message is printed as a line).
STATUS_WIDTH = 60


def progress_line(message: str) -> None:
    """Print one progress line on stderr."""
    sys.stderr.write(f"• {escape_controls(message)}\n")  # build output and errors may quote a plugin
    sys.stderr.flush()


@contextmanager
def progress_reporter() -> Iterator[Report]:
    """A progress callback for the duration of an operation: spinner and bar on a terminal, else plain lines."""
    if not fancy_terminal(sys.stderr):
        yield progress_line
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    console = Console(file=sys.stderr, highlight=False)
    columns = (SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("", total=None)

        def report(message: str) -> None:
            bar.console.print(Text(f"• {escape_controls(message)}"))
            text = escape_controls(message, one_line=True)
            step = BUILD_STEP.match(message)
            if step is not None:
                bar.update(task, total=int(step[2]), completed=int(step[1]) - 1)
            short = text if len(text) <= STATUS_WIDTH else text[: STATUS_WIDTH - 1] + "…"
            bar.update(task, description=short)

        yield report
