"""A plugin that misbehaves on purpose: every command attacks one limit or one part of the sandbox.

Used by tests/integration/test_limits.py and test_hardening_callpath.py. Every loop is bounded in count and
time, so a broken limit makes a test fail instead of taking the machine down.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from sysops_sdk import Plugin, argument, option, plugin_command

_MIB = 1 << 20
#: Terminal attacks: OSC 52 (set the clipboard), OSC 0 (title), clear screen, CR, backspace, RLO, C1 CSI.
ESCAPES = "\x1b]52;c;cm0gLXJmIH4=\x07\x1b]0;pwned\x07\x1b[2J\rsafe\x08\u202eexe.txt\x9b31m"
_CRASH_MARKER = "/data/crashloop"
_CRASH_LATER_MARKER = "/data/crash-later"
_FORK_BOMB = r"""
import ctypes, os, sys, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: reap the bomb's orphans
deadline = time.monotonic() + float(sys.argv[1])
if os.fork() == 0:
    forks = 0
    while time.monotonic() < deadline and forks < 100_000:
        try:
            if os.fork() == 0:
                forks = 0
            forks += 1
        except OSError:
            time.sleep(0.02)
    os._exit(0)
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
"""


def _error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"refused: {errno.errorcode.get(exc.errno, exc.errno)}"
    return f"refused: {type(exc).__name__}: {exc}"


class HostilePlugin(Plugin):
    name = "hostile"
    version = "1.0.0"
    description = "Misbehaves on purpose"

    def initialize(self) -> None:
        self.hoard: list[bytes] = []
        self.cleaned_up = False
        if os.path.exists(_CRASH_MARKER):  # armed by `crashloop`: crash shortly after every start
            threading.Timer(0.5, os._exit, args=(1,)).start()
        if os.path.exists(_CRASH_LATER_MARKER):  # armed by `crash-later`: crash this long after every start
            with open(_CRASH_LATER_MARKER) as handle:
                threading.Timer(float(handle.read()), os._exit, args=(1,)).start()

    def cleanup(self) -> None:
        self.hoard.clear()
        self.cleaned_up = True

    @plugin_command("ping")
    def ping(self) -> str:
        return "pong"

    @plugin_command("crash-later")
    @option("--seconds", help="Run this long after every start, then crash with exit code 1")
    def crash_later(self, seconds: float = 3.0) -> str:
        """Crash now and then `seconds` after every restart (the marker lives on the data volume)."""
        with open(_CRASH_LATER_MARKER, "w") as handle:
            handle.write(str(seconds))
        print("sysops-plugin-test: about to crash", file=sys.stderr, flush=True)
        threading.Timer(0.3, os._exit, args=(1,)).start()
        return "armed"

    @plugin_command("flood")
    @option("--mb", help="MiB to write to stdout as fast as possible")
    def flood(self, mb: int = 100) -> str:
        """Write `mb` MiB of 4 KiB lines to stdout (the container log)."""
        line = "x" * 4095 + "\n"
        for _ in range(min(mb, 1024) * 256):
            sys.stdout.write(line)
        sys.stdout.flush()
        return f"wrote {mb} MiB"

    @plugin_command("crashloop")
    def crashloop(self) -> str:
        """Crash now and shortly after every restart (the marker lives on the data volume)."""
        with open(_CRASH_MARKER, "w") as handle:
            handle.write("armed")
        threading.Timer(0.3, os._exit, args=(1,)).start()
        return "armed"

    @plugin_command("hog")
    @option("--max-mb", help="Stop after this much")
    @option("--seconds", help="Stop after this long")
    def hog(self, max_mb: int = 4096, seconds: float = 30.0) -> str:
        """Allocate (and touch) memory in 8 MiB steps until killed or a bound is reached."""
        deadline = time.monotonic() + seconds
        while len(self.hoard) * 8 < max_mb and time.monotonic() < deadline:
            self.hoard.append(b"\x01" * (8 * _MIB))
            time.sleep(0.01)
        held = len(self.hoard) * 8
        self.hoard.clear()
        return f"survived holding {held} MiB"

    @plugin_command("spin")
    @option("--seconds", help="How long to burn CPU")
    def spin(self, seconds: float = 3.0) -> str:
        """Busy-loop on one thread."""
        deadline = time.monotonic() + min(seconds, 30.0)
        loops = 0
        while time.monotonic() < deadline:
            loops += 1
        return f"spun {loops} loops"

    @plugin_command("disk")
    @option("--mb", help="MiB to write, then read back, with O_DIRECT")
    def disk(self, mb: int = 15) -> dict[str, float]:
        """Write and read a file on /data with O_DIRECT (no page cache), timing both."""
        buffer = mmap.mmap(-1, _MIB)  # page-aligned, as O_DIRECT needs
        buffer.write(b"\x5a" * _MIB)
        path = "/data/io-probe"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
        started = time.monotonic()
        try:
            for _ in range(min(mb, 256)):
                os.write(fd, buffer)
            os.fsync(fd)
        finally:
            os.close(fd)
        wrote = time.monotonic() - started
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        started = time.monotonic()
        try:
            for _ in range(min(mb, 256)):
                os.readv(fd, [buffer])
        finally:
            os.close(fd)
        read = time.monotonic() - started
        os.unlink(path)
        return {"mb": mb, "write_seconds": wrote, "write_mb_per_sec": mb / wrote, "read_mb_per_sec": mb / read}

    @plugin_command("bomb")
    @option("--seconds", help="How long every process of the bomb keeps forking")
    def bomb(self, seconds: float = 4.0) -> str:
        """Run a classic fork bomb (every process forks) for a bounded time, then reap it."""
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", _FORK_BOMB, str(min(seconds, 10.0))], timeout=30, check=False)
        return f"bomb over after {time.monotonic() - started:.1f}s"

    @plugin_command("probe")
    def probe(self) -> dict[str, Any]:
        """Try to escape: write to /, become root, mount, make a user namespace, reach the Docker socket."""
        libc = ctypes.CDLL(None, use_errno=True)
        results: dict[str, Any] = {"uid": os.getuid()}
        try:
            with open("/escape-probe", "w") as handle:
                handle.write("x")
            results["write_root"] = "allowed"
        except OSError as exc:
            results["write_root"] = _error(exc)
        for name, call in (("setuid_root", lambda: os.setuid(0)), ("setgid_root", lambda: os.setgid(0))):
            try:
                call()
                results[name] = "allowed"
            except OSError as exc:
                results[name] = _error(exc)
        os.makedirs("/tmp/mnt", exist_ok=True)
        rc = libc.mount(b"tmpfs", b"/tmp/mnt", b"tmpfs", 0, None)
        results["mount"] = "allowed" if rc == 0 else f"refused: {errno.errorcode.get(ctypes.get_errno(), '?')}"
        rc = libc.unshare(0x10000000)  # CLONE_NEWUSER: a user namespace would hand out capabilities
        results["user_namespace"] = "allowed" if rc == 0 else f"refused: {errno.errorcode.get(ctypes.get_errno(), '?')}"
        results["docker_socket"] = "refused: none found"
        for path in ("/var/run/docker.sock", "/run/docker.sock"):
            if os.path.exists(path):
                try:
                    with socket.socket(socket.AF_UNIX) as sock:
                        sock.connect(path)
                    results["docker_socket"] = f"allowed: {path}"
                except OSError as exc:
                    results["docker_socket"] = _error(exc)
        with open("/proc/self/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("Seccomp", "NoNewPrivs", "CapEff", "CapPrm", "CapBnd"):
                    results[key] = value.strip()
        return results

    @plugin_command("connect")
    @argument("host", help="Address to connect to")
    @argument("port", help="TCP port")
    @option("--count", help="Connections to hold open at once")
    def connect(self, host: str, port: int, count: int = 1) -> list[str]:
        """Open `count` TCP connections at once (held until all were tried); report each outcome."""
        outcomes: list[str] = []
        held: list[socket.socket] = []
        try:
            for _ in range(min(count, 32)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.settimeout(3)
                try:
                    sock.connect((host, port))
                    held.append(sock)
                    outcomes.append("connected")
                except OSError as exc:
                    sock.close()
                    outcomes.append(_error(exc))
        finally:
            for sock in held:
                sock.close()
        return outcomes

    @plugin_command("udp")
    @argument("host", help="Address to send a datagram to")
    @argument("port", help="UDP port")
    def udp(self, host: str, port: int) -> str:
        """Send one UDP datagram."""
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"x", (host, port))
            return "sent"
        except OSError as exc:
            return _error(exc)

    # The call path (tests/integration/test_hardening_callpath.py): terminal attacks, huge replies, slow calls.

    @plugin_command("escapes")
    @option("--fail", is_flag=True, help="Raise with the escapes in the error instead")
    @option("--stream", is_flag=True, help="Stream them as output lines instead")
    def escapes(self, fail: bool = False, stream: bool = False) -> Iterator[str] | str:
        """Log, return, stream or raise OSC 52 (clipboard), a title, a screen clear, CR, backspace, bidi, C1."""
        attack = ESCAPES
        print(f"log line {attack}", file=sys.stderr, flush=True)
        if fail:
            raise RuntimeError(f"boom {attack}")
        return iter([f"line {attack}"]) if stream else f"result {attack}"

    @plugin_command("big")
    @option("--mb", help="MiB of text to return")
    @option("--data", is_flag=True, help="Return a dict holding the text instead")
    def big(self, mb: float = 5.0, data: bool = False) -> str | dict[str, str]:
        """Return `mb` MiB of text (bounded at 100 MiB)."""
        text = "x" * int(min(mb, 100.0) * _MIB)
        return {"payload": text} if data else text

    @plugin_command("slow")
    @option("--seconds", help="How long the call takes")
    def slow(self, seconds: float = 0.3) -> str:
        """Sleep a while (bounded at 10 s), then answer: keeps calls in flight during a drain."""
        time.sleep(min(seconds, 10.0))
        if self.cleaned_up:
            return "ran after cleanup"
        return "done"
