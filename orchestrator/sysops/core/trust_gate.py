"""The trust gate: every roll's image must carry signatures its plugin's tier accepts (docs/signing.md).

Registered first in core/roll_gates.py, it runs on the local host and in `sysops serve` alike, before any
instance starts. The plugin's tier comes from its install record (distribution/installs.py: a plugin brought
up from a directory is `private`), the rule for the tier from the policy file's `trust:` key. The image is
named by its config digest: the engine's image id locally; on Kubernetes, where the server has no engine, the
config digest of the registry manifest the roll runs. There the tag asked for is resolved once, before the
gates, to the registry's manifest digest (`pinned_image`, called by Orchestrator.up_image): the gate verifies
that manifest's config, and the pods, the revision and every later replica or rollback pull
`REPO@sha256:<digest>`, so a tag moved after the check changes nothing that runs. Its signatures come from this
installation's cache, else from the registry beside the image (`sha256-<hex>.sig`); an unreachable registry
refuses the roll only where the tier requires a signature (elsewhere it is logged and the image counts as
unsigned). A signature's manifest must be the manifest rolled: the signed (declared) manifest with this policy
applied, under the plugin's name or its side-by-side key.
A refusal is a PolicyDeniedError (exit code 9) whose message says which check failed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sysops.core.dependencies import plugin_name_of, side_by_side_key
from sysops.core.manifest import Manifest, parse_manifest
from sysops.core.policy import Policy, apply_policy, load_policy
from sysops.core.rollout import RollTarget
from sysops.distribution.installs import tier_of
from sysops.errors import EngineUnavailableError, PolicyDeniedError, SysopsError
from sysops.settings import Settings
from sysops.trust.keys import keyring
from sysops.trust.policy import TierTrust
from sysops.trust.signature_store import cached_signatures, config_digest, pinned_reference, registry_signatures
from sysops.trust.signing import Signature
from sysops.trust.verdicts import Verdict, record_verdict
from sysops.trust.verification import decide

if TYPE_CHECKING:
    from sysops.core.roll_gates import RollGate  # roll_gates imports this module

LOG = logging.getLogger("sysops.trust")
_HINT = "`sysops plugin verify NAME` shows the image's signatures; docs/signing.md says what each tier accepts"


def trust_gate(settings: Settings) -> RollGate:
    """The gate of the installation at `settings.home`."""

    def gate(target: RollTarget, serving: Manifest | None) -> None:
        check_trust(settings.home, target)

    return gate


def image_digest_of(target: RollTarget) -> str | None:
    """The config digest of the image the roll runs: the engine's image id, else the registry's for the reference
    that runs (`target.image_id`, pinned to a manifest digest by `pinned_image`), None when unknown."""
    if target.image_id.startswith("sha256:"):
        return target.image_id
    return config_digest(target.image_id)


def pinned_image(home: Path, manifest: Manifest, image: str) -> str:
    """What a runtime that pulls by reference (Kubernetes) is to run for `image`: `REPO@sha256:<manifest digest>`
    for a tag in a registry, resolved now; `image` itself when it names no registry or is pinned already. A
    registry that cannot be reached refuses where the plugin's tier requires a signature; elsewhere it is
    logged and the tag runs (unverified, as the tier allows)."""
    try:
        return pinned_reference(image) or image
    except EngineUnavailableError as error:
        plugin, tier, rule = _rule_of(home, manifest)
        if rule.require_signature:
            raise
        LOG.warning(
            "plugin %s: image %s not pinned to a digest (%s); tier %s allows unsigned images",
            plugin,
            image,
            error,
            tier,
        )
        return image


def signatures_of(home: Path, image: str, image_digest: str) -> list[Signature]:
    """The signatures of an image: the cache's, else the registry's."""
    return cached_signatures(home, image_digest) or registry_signatures(image, image_digest)


def check_trust(home: Path, target: RollTarget) -> Verdict:
    """Admit the roll (returning the verdict, also recorded) or raise PolicyDeniedError saying why."""
    policy = load_policy(home)
    plugin, tier, rule = _rule_of(home, target.manifest, policy)
    try:
        image_digest = image_digest_of(target)
        signatures = signatures_of(home, target.image, image_digest) if image_digest else []
    except EngineUnavailableError as error:
        if rule.require_signature:
            raise
        # Where signatures are optional, an unreachable registry must not stop what ran before signing existed.
        LOG.warning("plugin %s: signatures not read (%s); tier %s allows unsigned images", plugin, error, tier)
        image_digest, signatures = None, []
    decision = decide(
        signatures,
        image_digest or "",
        keyring(home),
        tier,
        rule,
        lambda signature: _manifest_is_rolled(signature, target.manifest, policy),
    )
    signer = decision.signer if decision.admitted else None
    verdict = Verdict(
        plugin,
        image_digest or "",
        tier,
        signer is not None,
        signer.key_id if signer else "",
        signer.name if signer else "",
    )
    if image_digest:
        record_verdict(home, verdict)
    if not decision.admitted:
        raise PolicyDeniedError(f"plugin {plugin} {target.manifest.version} refused: {decision.reason}", hint=_HINT)
    return verdict


def _rule_of(home: Path, manifest: Manifest, policy: Policy | None = None) -> tuple[str, str, TierTrust]:
    """(plugin, its tier, the trust policy's rule for that tier) of a roll of `manifest`."""
    plugin = plugin_name_of(manifest.name)
    tier = tier_of(home, plugin)
    return plugin, tier, (policy or load_policy(home)).trust.for_tier(tier)


def _manifest_is_rolled(signature: Signature, rolled: Manifest, policy: Policy) -> bool:
    """Whether the signed manifest, with `policy` applied, is the manifest `rolled` (under its key)."""
    try:
        signed = parse_manifest(json.loads(signature.manifest_json), "the signed manifest")
        admitted = apply_policy(signed, policy, "the signed manifest")
    except (SysopsError, ValueError, RecursionError):
        return False
    if rolled.name not in (signed.name, side_by_side_key(signed.name, _major(signed.version))):
        return False
    return admitted.model_copy(update={"name": rolled.name}).model_dump() == rolled.model_dump()


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else -1
