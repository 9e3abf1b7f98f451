"""Egress allow-lists and connection limits for Docker plugin containers, as iptables rules in their netns.

The engine has no notion of "this container may only reach these hosts" or "at most N connections", so
sysops programs the container's own network namespace from the host (`nsenter -t PID -n iptables ...`).
To have the rules in place before any plugin code runs, the namespace belongs to a small holder
container started first (same image, hardened the same way, it only sleeps); the plugin container then
joins it with `network_mode=container:<holder>`. The plugin runs without capabilities, so it cannot
change the rules. Host names are resolved on the host when the instance starts and written to the
holder's /etc/hosts (which the plugin container shares), so no DNS server needs to be reachable.

The rule set (IPv4; IPv6 output is rejected except on loopback):
    OUTPUT  -o lo ACCEPT · ESTABLISHED,RELATED ACCEPT · allowed destination[/port] -> SYSOPS-ALLOW ·
            REJECT everything else (TCP reset, so a refused connect fails at once)
    SYSOPS-ALLOW  connlimit above N (mask 0: all connections of the namespace) REJECT · ACCEPT
The connection limit's rules and their read-back are runtime/netns_firewall.py's (the Kubernetes node agent
programs the same limit in plugin pods).
    INPUT   -i lo ACCEPT · ESTABLISHED,RELATED ACCEPT · policy DROP (nothing may connect in)
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from sysops.errors import RuntimeOperationError
from sysops.runtime.base import EgressAllowance
from sysops.runtime.netns_firewall import connection_limit, connection_limit_rules, nsenter_prefix, run_iptables

ALLOW_CHAIN = "SYSOPS-ALLOW"
_TIMEOUT = 15


@dataclass(frozen=True)
class ResolvedEgress:
    """The allow-list with host names resolved: IPv4 networks with their ports, and /etc/hosts entries."""

    destinations: tuple[tuple[str, tuple[int, ...]], ...]
    hosts: dict[str, str]


def resolve(egress: Sequence[EgressAllowance], plugin: str) -> ResolvedEgress:
    """Resolve host names (on the host, now); refuse IPv6 destinations, which the bridge cannot route."""
    destinations: list[tuple[str, tuple[int, ...]]] = []
    hosts: dict[str, str] = {}
    for rule in egress:
        ports = tuple(sorted(set(rule.ports)))
        try:
            network = ipaddress.ip_network(rule.host, strict=False)
        except ValueError:
            network = None
        if network is not None:
            if network.version != 4:
                raise RuntimeOperationError(
                    f"{plugin}: network allow-list entry {rule.host!r} is IPv6; the docker runtime routes IPv4 only"
                )
            destinations.append((str(network), ports))
            continue
        try:
            infos = socket.getaddrinfo(rule.host, None, socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            raise RuntimeOperationError(
                f"{plugin}: network allow-list host {rule.host!r} does not resolve ({exc})"
            ) from exc
        addresses = sorted({str(info[4][0]) for info in infos})
        hosts[rule.host] = addresses[0]
        destinations.extend((f"{address}/32", ports) for address in addresses)
    return ResolvedEgress(tuple(destinations), hosts)


def rules(destinations: Sequence[tuple[str, tuple[int, ...]]], connections: int | None) -> list[list[str]]:
    """The iptables commands (arguments after `iptables -w`) that implement the allow-list and the limit."""
    commands: list[list[str]] = [
        ["-N", ALLOW_CHAIN],
        ["-P", "INPUT", "DROP"],
        ["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
        ["-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        ["-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT"],
        ["-A", "OUTPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
    ]
    for network, ports in destinations:
        if not ports:
            commands.append(["-A", "OUTPUT", "-d", network, "-j", ALLOW_CHAIN])
        for port in ports:
            for protocol in ("tcp", "udp"):
                commands.append(
                    ["-A", "OUTPUT", "-d", network, "-p", protocol, "--dport", str(port), "-j", ALLOW_CHAIN]
                )
    commands.append(["-A", "OUTPUT", "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"])
    commands.append(["-A", "OUTPUT", "-j", "REJECT", "--reject-with", "icmp-admin-prohibited"])
    if connections is not None:
        commands.extend(connection_limit_rules(ALLOW_CHAIN, connections))
    commands.append(["-A", ALLOW_CHAIN, "-j", "ACCEPT"])
    return commands


IPV6_RULES: list[list[str]] = [
    ["-P", "INPUT", "DROP"],
    ["-P", "OUTPUT", "DROP"],
    ["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
    ["-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT"],
]


def check_host_support(plugin: str) -> None:
    """Refuse early when this host cannot program a container's network namespace."""
    missing = [tool for tool in ("nsenter", "iptables") if shutil.which(tool) is None]
    if missing:
        raise RuntimeOperationError(
            f"{plugin}: network allow-lists and connection limits need {' and '.join(missing)} on the host",
            hint="install util-linux and iptables, or use 'network: none'",
        )
    if os.geteuid() != 0:
        raise RuntimeOperationError(
            f"{plugin}: network allow-lists and connection limits need root on the docker host "
            "(sysops programs iptables inside the plugin's network namespace)",
            hint="run sysops as root, or use 'network: none'",
        )


def _run(pid: int, binary: str, arguments: list[str]) -> subprocess.CompletedProcess[str]:
    return run_iptables(nsenter_prefix(pid), arguments, binary)


def apply(pid: int, destinations: Sequence[tuple[str, tuple[int, ...]]], connections: int | None, plugin: str) -> None:
    """Program the firewall of the network namespace of process `pid`; raise naming the failing rule."""
    if not os.path.exists(f"/proc/{pid}/ns/net"):
        raise RuntimeOperationError(
            f"{plugin}: the network holder's process {pid} is not visible on this host; "
            "allow-lists need a local docker engine"
        )
    for arguments in rules(destinations, connections):
        result = _run(pid, "iptables", arguments)
        if result.returncode != 0:
            raise RuntimeOperationError(
                f"{plugin}: cannot program the plugin's firewall (iptables {' '.join(arguments)}): "
                f"{result.stderr.strip()[:200]}",
                hint="the kernel needs the conntrack, connlimit and REJECT netfilter modules",
            )
    if shutil.which("ip6tables") is not None:
        for arguments in IPV6_RULES:
            if _run(pid, "ip6tables", arguments).returncode != 0 and not _ipv6_disabled(pid):
                raise RuntimeOperationError(f"{plugin}: cannot block IPv6 in the plugin's network namespace")


def _ipv6_disabled(pid: int) -> bool:
    result = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6"],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
        check=False,
    )
    return result.stdout.strip() in ("", "1")


@dataclass(frozen=True)
class FirewallReading:
    """What the namespace's firewall enforces, read back with `iptables -S`."""

    connection_limit: int | None
    allowed: tuple[str, ...]
    rejects_rest: bool


def read_back(pid: int) -> FirewallReading | None:
    """Parse the rules in force in the network namespace of `pid`; None if they cannot be read."""
    if not os.path.exists(f"/proc/{pid}/ns/net") or shutil.which("nsenter") is None:
        return None
    try:
        result = _run(pid, "iptables", ["-S"])
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    limit = connection_limit(result.stdout, ALLOW_CHAIN)
    allowed: list[str] = []
    output = [line.split() for line in result.stdout.splitlines()]
    for words in output:
        if words[:2] == ["-A", "OUTPUT"] and words[-2:] == ["-j", ALLOW_CHAIN]:
            port = words[words.index("--dport") + 1] if "--dport" in words else "*"
            allowed.append(f"{words[words.index('-d') + 1]}:{port}")
    outputs = [words for words in output if words[:2] == ["-A", "OUTPUT"]]
    rejects_rest = bool(outputs) and outputs[-1][2:] == ["-j", "REJECT", "--reject-with", "icmp-admin-prohibited"]
    return FirewallReading(limit, tuple(sorted(set(allowed))), rejects_rest)


def expected_allowed(destinations: Sequence[tuple[str, tuple[int, ...]]]) -> tuple[str, ...]:
    """The `dest:port` strings `read_back` reports for an allow-list."""
    entries = {f"{net}:{port}" for net, ports in destinations for port in (ports or ("*",))}
    return tuple(sorted(entries))
