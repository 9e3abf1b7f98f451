"""Deciding whether an image may run: its signatures checked against the keyring and the rule of its tier.

The checks and their refusals, in the words the trust gate reports (each names the plugin):
- a signature whose payload names another image digest: "tampered image" (a signature moved to this image);
- a signature whose manifest is not the one rolled (or whose manifest JSON is not the one its digest names):
  "tampered manifest";
- a signature by a key that is neither own nor trusted: "unknown signer key <id>";
- a signature whose bytes do not verify with its key: "tampered signature";
- a valid signature by a key the tier does not accept: "signer key <id> is not trusted for tier <tier>";
- no signature where the tier requires one: "unsigned, tier <tier> requires a signature".
Any signature that passes every check admits the image; otherwise the first problem found is the refusal. A
signature that fails is never ignored, even where unsigned images are allowed: it says the image or its
manifest is not what someone signed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sysops.trust.keys import TrustedKey
from sysops.trust.policy import TierTrust
from sysops.trust.signing import Signature, manifest_matches, signature_holds


@dataclass(frozen=True)
class Decision:
    """The outcome: admitted or not, the key whose signature admitted it, and the refusal's reason."""

    admitted: bool
    signer: TrustedKey | None = None
    reason: str = ""


def decide(
    signatures: list[Signature],
    image_digest: str,
    keys: dict[str, TrustedKey],
    tier: str,
    rule: TierTrust,
    manifest_is_rolled: Callable[[Signature], bool],
) -> Decision:
    """Check each signature of the image with config digest `image_digest`; admit on the first that passes.

    `manifest_is_rolled(signature)` says whether the manifest a signature carries is the one being rolled.
    """
    problems: list[str] = []
    for signature in signatures:
        problem, key = _problem(signature, image_digest, keys, tier, rule, manifest_is_rolled)
        if not problem:
            return Decision(True, key)
        problems.append(problem)
    if problems:
        return Decision(False, reason=problems[0])
    if rule.require_signature:
        return Decision(False, reason=f"unsigned, tier {tier} requires a signature")
    return Decision(True)


def _problem(
    signature: Signature,
    image_digest: str,
    keys: dict[str, TrustedKey],
    tier: str,
    rule: TierTrust,
    manifest_is_rolled: Callable[[Signature], bool],
) -> tuple[str, TrustedKey | None]:
    """The first problem of one signature ("" when it admits the image) and its known key."""
    payload = signature.payload
    if payload.image_digest != image_digest:
        return f"tampered image: the signature is for image {payload.image_digest}, this image is {image_digest}", None
    key = keys.get(signature.key_id)
    if key is None:
        return f"unknown signer key {signature.key_id[:16]!r}", None
    if not signature_holds(signature, key.public_key):
        return f"tampered signature: it does not verify with key {key.shown}", key
    if not manifest_matches(signature) or not manifest_is_rolled(signature):
        return f"tampered manifest: the manifest rolled is not the one key {key.shown} signed", key
    if not rule.accepts(key):
        return f"signer key {key.shown} is not trusted for tier {tier}", key
    return "", key
