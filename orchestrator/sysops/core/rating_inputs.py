"""What the rating (core/rating.py) reads about a plugin besides its manifest, gathered from the packages that know.

- the trust tier: `sysops.distribution.installs.tier_of` (private when the plugin was not installed);
- the signature verdict of its image: `sysops.trust.verdicts.load_verdict(home, image_digest)` (the trust
  gate's last decision for that image config digest);
- the static findings of its build: `sysops.checks.run.load_report(home, plugin, version)`.

The verdict and report modules are imported when asked: where one is missing (a build of sysops without
it), refuses the digest (an image reference that is no digest, as on Kubernetes) or has nothing for this
plugin, the rating takes the cautious reading (no valid signature known, no findings known) instead of
failing `ls`, `status` or a roll.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from sysops.core.dependencies import plugin_name_of
from sysops.core.manifest import Manifest
from sysops.core.policy import Policy, load_policy
from sysops.core.rating import Rating, SignatureFacts, rate
from sysops.distribution.installs import tier_of
from sysops.errors import SysopsError

log = logging.getLogger(__name__)

VERDICTS_MODULE = "sysops.trust.verdicts"
CHECKS_MODULE = "sysops.checks.run"


def rating_of(home: Path, manifest: Manifest, image_id: str, policy: Policy | None = None) -> Rating:
    """The rating of a plugin running (or about to run) `manifest` (after policy) from image `image_id`."""
    policy = policy if policy is not None else load_policy(home)
    return rate(manifest, policy, signature_facts(home, manifest.name, image_id), finding_severities(home, manifest))


def signature_facts(home: Path, plugin: str, image_id: str) -> SignatureFacts:
    """The plugin's tier and whether its image's last trust decision admitted a signature (and whose)."""
    tier = _safe_tier(home, plugin)
    verdict = _call_optional(VERDICTS_MODULE, "load_verdict", home, image_id) if image_id else None
    if verdict is None:
        return SignatureFacts(tier=tier, signed=False)
    signer = str(verdict.signer_key_id)
    return SignatureFacts(tier=str(verdict.tier or tier), signed=bool(verdict.signed), signer=signer)


def finding_severities(home: Path, manifest: Manifest) -> list[str]:
    """The severities of the findings the static checks saved for this plugin's version (none when unknown)."""
    report = _call_optional(CHECKS_MODULE, "load_report", home, plugin_name_of(manifest.name), manifest.version)
    return [str(finding.severity) for finding in report or []]


def _safe_tier(home: Path, plugin: str) -> str:
    try:
        return tier_of(home, plugin_name_of(plugin))
    except SysopsError as exc:  # a damaged install record file: the least trusting reading
        log.warning("install records unreadable, rating %s as tier community: %s", plugin, exc)
        return "community"


def _call_optional(module_name: str, function: str, *arguments: Any) -> Any:
    """Call `module_name.function`; None when the module is not there or refuses the arguments."""
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    try:
        return getattr(module, function)(*arguments)
    except SysopsError as exc:
        log.debug("%s.%s: %s; rating without it", module_name, function, exc)
        return None
