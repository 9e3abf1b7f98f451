"""A plugin pod's connection limit: iptables connlimit in the pod's network namespace, applied and read back.

The pod's namespace belongs to its sandbox (pause) container, so the rules outlive a restart of the plugin
container; they go when the pod goes. Only the limit is programmed here: which destinations a pod may reach
is its NetworkPolicy's job, and connections into the pod (the server's calls) are not counted. Outbound
connections other than on loopback pass through SYSOPS-CONNLIMIT, built by the same rule builder the Docker
runtime uses (runtime/netns_firewall.py). The node agent's image has no iptables: the node's own runs, from
the host's root filesystem mounted read-only in the agent's pod (`host_root`), as the Docker runtime runs the
host's. The namespace is a descriptor held open by pod_netns.py (proven to be the pod's), never a PID.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from sysops.runtime.netns_firewall import connection_limit, connection_limit_rules, held_namespace_prefix, run_iptables

CHAIN = "SYSOPS-CONNLIMIT"
JUMP = ["OUTPUT", "!", "-o", "lo", "-j", CHAIN]


class FirewallError(Exception):
    """The pod's firewall cannot be read or programmed (the message names the rule and iptables' answer)."""


def limit_rules(connections: int) -> list[list[str]]:
    """The iptables commands that limit a namespace to `connections` outbound connections at a time."""
    return [["-N", CHAIN], *connection_limit_rules(CHAIN, connections), ["-A", *JUMP]]


def removal_rules() -> list[list[str]]:
    """The iptables commands that remove the limit (each may fail when there is nothing to remove)."""
    return [["-D", *JUMP], ["-F", CHAIN], ["-X", CHAIN]]


def limit_in(listing: str) -> int | None:
    """The limit in force in an `iptables -S` listing: the chain's connlimit, when OUTPUT jumps to it."""
    jumps = any(line.split() == ["-A", *JUMP] for line in listing.splitlines())
    return connection_limit(listing, CHAIN) if jumps else None


class ConnectionLimiter:
    """Programs and reads the connection limit in a network namespace held open on this node (pod_netns.py)."""

    def __init__(self, host_root: str = "") -> None:
        self.host_root = host_root

    def _run(self, namespace: int, arguments: Sequence[str]) -> subprocess.CompletedProcess[str]:
        prefix = held_namespace_prefix(namespace, root=self.host_root)
        return run_iptables(prefix, arguments, pass_fds=[namespace])

    def read(self, namespace: int) -> int | None:
        """The limit in force in the held `namespace` (None: none)."""
        result = self._run(namespace, ["-S"])
        if result.returncode != 0:
            raise FirewallError(f"cannot read the pod's firewall (iptables -S): {result.stderr.strip()[:200]}")
        return limit_in(result.stdout)

    def apply(self, namespace: int, connections: int | None) -> None:
        """Make the held `namespace` enforce `connections` (None: no limit); nothing changes if it already does."""
        if self.read(namespace) == connections:
            return
        for arguments in removal_rules():
            self._run(namespace, arguments)
        for arguments in limit_rules(connections) if connections is not None else []:
            result = self._run(namespace, arguments)
            if result.returncode != 0:
                raise FirewallError(
                    f"cannot program the pod's firewall (iptables {' '.join(arguments)}): {result.stderr.strip()[:200]}"
                )
