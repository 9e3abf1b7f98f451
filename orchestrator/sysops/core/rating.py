"""A plugin's security rating, 1 to 6, from what it asks for: the one table `ls`, `status` and the gates share.

In the spirit of Home Assistant's add-on rating: a plugin starts at 6 and loses points for each kind of
access it asks for and for what is known against it. The rating is computed from the manifest AFTER policy
(the limits it will run with), the operator's policy (its defaults), the trust tier and signature verdict
of its image, and the findings of the static checks at build (core/rating_inputs.py gathers those):

    network       an allow-list                                           -1
                  a wide one: a destination without ports, a block larger
                  than a /24 (IPv4) or /64 (IPv6), or more than 5 entries -1 more
    permissions   one outside the host services (state, config, ...)      -1
                  a privileged one (system.*, a wildcard, *.execute,
                  *.admin) instead                                        -2
    limits        any limit above what a manifest leaving it out gets
                  (the policy default, else the built-in one)             -1
    signature     no valid signature known, tier private                  -1
                  no valid signature known, tier community or official    -2
    findings      a medium-severity finding                               -1
                  a high-severity finding instead                         -2

The result is never below 1. Each lost point comes with a reason, shown by `plugin status`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from sysops.core.manifest import Limits, LogLimits, Manifest
from sysops.core.policy import Policy, apply_policy

BEST = 6
WORST = 1
#: Permission namespaces of the host services (services/permissions.py SERVICES): asking them costs nothing.
HOST_SERVICE_NAMESPACES = frozenset({"alerts", "config", "events", "logs", "metrics", "plugins", "secrets", "state"})
#: Last segments of a permission that give a plugin power over the system rather than its own data.
PRIVILEGED_ACTIONS = frozenset({"execute", "admin", "root"})
PRIVILEGED_NAMESPACES = frozenset({"system"})
#: More destinations than this in an allow-list make it wide.
WIDE_NETWORK_ENTRIES = 5
WIDEST_IPV4_PREFIX = 24
WIDEST_IPV6_PREFIX = 64


@dataclass(frozen=True)
class SignatureFacts:
    """What the rating needs of a signature check: the trust tier and whether a valid signature is known."""

    tier: str
    signed: bool
    signer: str = ""


@dataclass(frozen=True)
class Rating:
    """A rating and why it is not 6 (one reason per lost point or points, e.g. "-1 network allow-list")."""

    score: int
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready view."""
        return {"score": self.score, "reasons": list(self.reasons)}


def rate(manifest: Manifest, policy: Policy, signature: SignatureFacts, severities: Iterable[str]) -> Rating:
    """The rating of `manifest` (after policy) under `policy`, with its signature facts and finding severities."""
    penalties = [
        *_network(manifest),
        *_permissions(manifest),
        *_limits(manifest, policy),
        *_signature(signature),
        *_findings(set(severities)),
    ]
    score = max(WORST, BEST - sum(points for points, _ in penalties))
    return Rating(score, tuple(f"-{points} {reason}" for points, reason in penalties))


def is_wide_destination(host: str, ports: list[int]) -> bool:
    """A destination without ports, or a network block wider than a /24 (IPv4) or /64 (IPv6)."""
    if not ports:
        return True
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        return False  # a host name
    widest = WIDEST_IPV4_PREFIX if network.version == 4 else WIDEST_IPV6_PREFIX
    return network.prefixlen < widest


def is_privileged_permission(permission: str) -> bool:
    """`system.*`, a wildcard, or an action such as `deployment.execute`."""
    segments = permission.split(".")
    return "*" in permission or segments[0] in PRIVILEGED_NAMESPACES or segments[-1] in PRIVILEGED_ACTIONS


def _network(manifest: Manifest) -> list[tuple[int, str]]:
    if manifest.network == "none":
        return []
    penalties = [(1, f"network allow-list ({len(manifest.network)} destinations)")]
    wide = [rule.host for rule in manifest.network if is_wide_destination(rule.host, rule.ports)]
    if wide or len(manifest.network) > WIDE_NETWORK_ENTRIES:
        what = f"wide destinations {', '.join(wide)}" if wide else f"more than {WIDE_NETWORK_ENTRIES} destinations"
        penalties.append((1, f"wide network ({what})"))
    return penalties


def _permissions(manifest: Manifest) -> list[tuple[int, str]]:
    privileged = [p for p in manifest.permissions if is_privileged_permission(p)]
    if privileged:
        return [(2, f"privileged permissions {', '.join(privileged)}")]
    beyond = [p for p in manifest.permissions if p.split(".")[0] not in HOST_SERVICE_NAMESPACES]
    return [(1, f"permissions beyond the host services {', '.join(beyond)}")] if beyond else []


def _limits(manifest: Manifest, policy: Policy) -> list[tuple[int, str]]:
    baseline = policy_baseline(policy)
    above = []
    for key, value in manifest.limits.model_dump().items():
        default = getattr(baseline, key)
        if default is not None and (value is None or value > default):
            above.append(f"{key} {'unlimited' if value is None else f'{value:g}'} > {default:g}")
    return [(1, f"limits above the policy defaults ({', '.join(above)})")] if above else []


def policy_baseline(policy: Policy) -> Limits:
    """The limits a manifest that leaves every limit out runs with under `policy`."""
    bare = Manifest(name="baseline", version="0.0.0", entrypoint="baseline:Plugin")
    bare = bare.model_copy(update={"limits": Limits(), "logs": LogLimits()})
    return apply_policy(bare, policy.model_copy(update={"egress": "allow"}), "policy baseline").limits


def _signature(signature: SignatureFacts) -> list[tuple[int, str]]:
    if signature.signed:
        return []
    if signature.tier == "private":
        return [(1, "no valid signature known (tier private)")]
    return [(2, f"no valid signature known (tier {signature.tier})")]


def _findings(severities: set[str]) -> list[tuple[int, str]]:
    if "high" in severities:
        return [(2, "high-severity static findings")]
    if "medium" in severities:
        return [(1, "medium-severity static findings")]
    return []
