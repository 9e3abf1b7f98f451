"""What a new version of a plugin asks for beyond the version serving now: the rule of held upgrades.

Both manifests are compared after policy (the limits each runs with). Growth is:
- a permission or a secret the serving version does not ask for;
- a network destination (host and port) the serving allow-list does not cover: any allow-list where the
  serving version has `none`, a new host, a port beyond the serving rule's ports, a rule without ports (all
  ports) where the serving rule lists some, a network block wider than the serving block;
- a limit above the serving one (unlimited is above every number), the replicas and the log output
  kept on the host (`logs.max_mb`, `logs.files`) included: the policy caps them like limits.
Each growth is one line, such as `permission system.deploy` or `limits.memory_mb 256 -> 512`.
"""

from __future__ import annotations

import ipaddress

from sysops.core.manifest import EgressRule, Manifest


def growth(serving: Manifest, target: Manifest) -> list[str]:
    """The lines saying what `target` asks for beyond `serving` (empty when it asks nothing more)."""
    lines = [f"permission {p}" for p in target.permissions if p not in serving.permissions]
    lines += [f"secret {s}" for s in target.secrets if s not in serving.secrets]
    lines += network_growth(serving, target)
    lines += limits_growth(serving, target)
    return lines


def network_growth(serving: Manifest, target: Manifest) -> list[str]:
    """The target's destinations the serving allow-list does not cover."""
    if target.network == "none":
        return []
    allowed = [] if serving.network == "none" else serving.network
    return [f"network {describe(rule)}" for rule in target.network if not any(covers(a, rule) for a in allowed)]


def covers(allowed: EgressRule, asked: EgressRule) -> bool:
    """Whether `allowed` lets through everything `asked` does (same host or an enclosing network; its ports)."""
    if allowed.ports and (not asked.ports or not set(asked.ports) <= set(allowed.ports)):
        return False
    if allowed.host.lower() == asked.host.lower():
        return True
    try:
        outer = ipaddress.ip_network(allowed.host, strict=False)
        inner = ipaddress.ip_network(asked.host, strict=False)
    except ValueError:
        return False  # host names are equal or different, nothing encloses them
    return outer.version == inner.version and inner.subnet_of(outer)  # type: ignore[arg-type]


def describe(rule: EgressRule) -> str:
    """`host:port,port` or `host (all ports)`."""
    return f"{rule.host}:{','.join(str(p) for p in rule.ports)}" if rule.ports else f"{rule.host} (all ports)"


def limits_growth(serving: Manifest, target: Manifest) -> list[str]:
    """`limits.KEY old -> new` for each limit the target raises (None = unlimited), `replicas` and `logs.KEY` too."""
    lines = _raised("limits.", serving.limits.model_dump(), target.limits.model_dump())
    lines += _raised("", {"replicas": serving.replicas}, {"replicas": target.replicas})
    return lines + _raised("logs.", serving.logs.model_dump(), target.logs.model_dump())


def _raised(prefix: str, before: dict[str, float | None], after: dict[str, float | None]) -> list[str]:
    """`PREFIXKEY old -> new` for each value `after` raises above `before` (None = unlimited)."""
    lines = []
    for key, new in after.items():
        old = before.get(key)
        if old is not None and (new is None or new > old):
            lines.append(f"{prefix}{key} {_shown(old)} -> {_shown(new)}")
    return lines


def _shown(value: float | None) -> str:
    return "unlimited" if value is None else f"{value:g}"
