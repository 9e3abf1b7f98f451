"""`sysops plugin logs` keeps the CLI's memory bounded, whatever the log's size (issue 15 item 5), on the real engine.

The CLI's own peak RSS (bench/child_usage.py: not the test process's, which a plain wait4 would report) is
measured for the whole log of one plugin at 8 MB and again at 64 MB: it may not grow with the log. The CLI
prints the batches of lines the host streams as they come (cli/log_tail.py print_batches); one that kept them
would grow by the 56 MB added, at least.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import SYSOPS, Sysops, write_plugin

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from child_usage import finish_measured, start_measured  # bench/ on sys.path

MIB = 1 << 20
LINE = "logs memory line " + "x" * 82 + "\n"  # 100 bytes
CODE = f"""
import sys
from sysops_sdk import Plugin, option, plugin_command

class P(Plugin):
    name = "logmem"
    version = "1.0.0"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("logmem-fill", timeout=300)
    @option("--mb", help="Megabytes of 100-byte lines to write to stdout")
    def fill(self, mb: int = 1) -> str:
        block = {LINE!r} * 10000
        for _ in range(mb):
            sys.stdout.write(block)
        sys.stdout.flush()
        return "ok"
"""


def _logs_peak_rss_mib(sysops: Sysops) -> tuple[float, int]:
    """The CLI's own peak RSS (MiB) printing the whole log, and the bytes it printed."""
    measured = start_measured(
        [SYSOPS, "plugin", "logs", "logmem"], sysops.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert measured.process.stdout is not None and measured.process.stderr is not None
    printed = 0
    while chunk := measured.process.stdout.read1(1 << 20):
        printed += len(chunk)
    errors = measured.process.stderr.read()
    usage = finish_measured(measured)
    assert usage.returncode == 0, errors.decode()[-400:]
    return usage.max_rss_kib / 1024, printed


def test_the_cli_memory_does_not_grow_with_the_log(fresh_sysops: Sysops, tmp_path: Path) -> None:
    sysops = fresh_sysops
    manifest = "network: none\nlogs: {max_mb: 128, files: 1}\n"  # the whole 64 MB in one file
    plugin = write_plugin(tmp_path / "logmem", name="logmem", code=CODE, manifest_extra=manifest)
    sysops.ok("plugin", "up", str(plugin))
    sysops.ok("logmem-fill", "--mb", "8")
    small, small_bytes = _logs_peak_rss_mib(sysops)
    sysops.ok("logmem-fill", "--mb", "56")
    large, large_bytes = _logs_peak_rss_mib(sysops)
    assert small_bytes >= 8_000_000 and large_bytes >= 64_000_000, (small_bytes, large_bytes)
    assert large - small < 16, f"CLI peak RSS {small:.0f} MiB for 8 MB of log, {large:.0f} MiB for 64 MB"
