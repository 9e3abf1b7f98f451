"""Connection limits as iptables rules inside one network namespace, shared by every runtime that programs them.

The Docker runtime programs a plugin's network namespace from the host (runtime/docker/network.py, with
its egress allow-list around the limit); the Kubernetes node agent programs a plugin pod's namespace from
its privileged pod on the node (sysops/nodeagent). Both build the limit with `connection_limit_rules`, run
iptables with `run_iptables` (through nsenter, inside the namespace of a process or one held open) and read
the limit back from `iptables -S` with `connection_limit`, so what one runtime enforces and reports, the other
does too.

The limit counts every connection the namespace opens through `chain` (connlimit with mask 0 groups all
of them), refuses a TCP connect over it with a reset (the connect fails at once with ECONNREFUSED) and
anything else with an ICMP admin-prohibited. Only NEW connections are checked: established ones carry on.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

_TIMEOUT = 15


def connection_limit_rules(chain: str, connections: int) -> list[list[str]]:
    """The rules (arguments after `iptables -w`) that refuse a NEW connection through `chain` once the
    namespace holds `connections` of them."""
    above = ["-m", "conntrack", "--ctstate", "NEW", "-m", "connlimit", "--connlimit-above", str(connections)]
    above += ["--connlimit-mask", "0"]
    return [
        ["-A", chain, "-p", "tcp", *above, "-j", "REJECT", "--reject-with", "tcp-reset"],
        ["-A", chain, *above, "-j", "REJECT", "--reject-with", "icmp-admin-prohibited"],
    ]


def connection_limit(rules_listing: str, chain: str) -> int | None:
    """The connection limit of `chain` in an `iptables -S` listing; None when the chain has none."""
    for line in rules_listing.splitlines():
        words = line.split()
        if len(words) > 1 and words[:2] == ["-A", chain] and "--connlimit-above" in words:
            value = words[words.index("--connlimit-above") + 1] if words[-1] != "--connlimit-above" else ""
            return int(value) if value.isdigit() else None
    return None


def nsenter_prefix(pid: int) -> list[str]:
    """The command prefix that runs a program in the network namespace of process `pid` (the Docker runtime's
    own containers, whose PID the engine reports)."""
    return ["nsenter", "-t", str(pid), "-n"]


def held_namespace_prefix(descriptor: int, *, root: str = "") -> list[str]:
    """The command prefix that runs a program in the network namespace held open as `descriptor` (pass it with
    run_iptables' `pass_fds`): no PID is looked up again, so a reused PID cannot redirect it.

    `root` runs the program found under that directory instead (nsenter --root): the node agent's image has
    no iptables, so it runs the node's own from the host's root filesystem mounted there (which also matches
    the node kernel's netfilter backend). nsenter opens both before it enters either.
    """
    return ["nsenter", f"--net=/proc/self/fd/{descriptor}", *([f"--root={root}"] if root else []), "--"]


def run_iptables(
    prefix: Sequence[str], arguments: Sequence[str], binary: str = "iptables", pass_fds: Sequence[int] = ()
) -> subprocess.CompletedProcess[str]:
    """Run `binary -w arguments` behind `prefix` (nsenter_prefix, held_namespace_prefix with the descriptor in
    `pass_fds`); the result, whatever its exit code."""
    return subprocess.run(
        [*prefix, binary, "-w", *arguments],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
        check=False,
        pass_fds=tuple(pass_fds),
    )
