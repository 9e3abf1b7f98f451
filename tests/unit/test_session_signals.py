"""The test session gives the CLIs it starts a live Ctrl-C, however the run itself was started (tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys


def test_a_process_started_by_the_tests_turns_ctrl_c_into_keyboard_interrupt() -> None:
    """Fails when the run inherited SIGINT ignored (started with `nohup ... &`) and the session did not restore it."""
    probe = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=30)
    assert shown.stdout.strip() == "True"
