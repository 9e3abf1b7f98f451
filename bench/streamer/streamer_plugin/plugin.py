"""Commands that stream many lines (a generator) or write many lines to the plugin's own log."""

import sys
import time
from collections.abc import Iterator

from sysops_sdk import Plugin, option, plugin_command

#: One log line of `fill-log`: 100 bytes with its newline.
LOG_LINE = "streamer log line " + "x" * 81 + "\n"


class StreamerPlugin(Plugin):
    name = "streamer"
    version = "1.0.0"
    description = "Streams lines, for the streaming and logs benchmark"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass


@plugin_command("stream-lines", timeout=600)
@option("--count", help="How many lines")
def stream_lines(count: int = 200000) -> Iterator[str]:
    """Yield COUNT numbered lines as fast as the generator can."""
    for number in range(count):
        yield f"line {number:07d} of the stream"


@plugin_command("slow-lines", timeout=600)
@option("--count", help="How many lines")
@option("--pause", help="Seconds between two lines")
def slow_lines(count: int = 3, pause: float = 1.0) -> Iterator[str]:
    """Yield COUNT lines with a pause between them (an interactive generator)."""
    for number in range(count):
        if number:
            time.sleep(pause)
        yield f"slow {number} {time.time():.6f}"


@plugin_command("fill-log", timeout=600)
@option("--mb", help="Megabytes of log lines to write to stdout")
def fill_log(mb: int = 1) -> str:
    """Write MB megabytes of 100-byte lines to the plugin's log (its stdout)."""
    block = LOG_LINE * 10000
    for _ in range(mb):
        sys.stdout.write(block)
    sys.stdout.flush()
    return f"wrote {mb * len(block)} bytes"
