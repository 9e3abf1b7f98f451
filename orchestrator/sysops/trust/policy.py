"""The trust policy: per tier, whether a plugin must be signed and whose signatures count.

It is the `trust:` key of the operator's policy file (core/policy.py):

    trust:
      official:  {require_signature: true, signers: [official]}
      community: {require_signature: true, signers: [official, community]}
      private:   {require_signature: false, signers: [official, community, private]}
      # keys: [alice]     # names of trusted keys accepted for the tier whatever their own tier

`signers` are tiers of keys (`sysops key trust FILE --tier T`); the installation's own keys (`local`, and
those `sysops key generate` made) count as `private`. The defaults above are the built-in ones: a plugin
brought up from a directory (tier private) built and signed here runs with no key configured.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sysops.trust.keys import KeyTier, TrustedKey


class TierTrust(BaseModel):
    """The rule of one tier."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    require_signature: bool
    signers: list[KeyTier] = Field(max_length=3)
    keys: list[str] = Field(default_factory=list, max_length=256)

    def accepts(self, key: TrustedKey) -> bool:
        """Whether a signature by `key` counts for this tier."""
        return key.tier in self.signers or key.name in self.keys


class TrustPolicy(BaseModel):
    """The rule of each tier."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    official: TierTrust = TierTrust(require_signature=True, signers=["official"])
    community: TierTrust = TierTrust(require_signature=True, signers=["official", "community"])
    private: TierTrust = TierTrust(require_signature=False, signers=["official", "community", "private"])

    def for_tier(self, tier: str) -> TierTrust:
        """The rule of `tier` (an unknown tier gets the strictest: official's)."""
        rule = getattr(self, tier, None) if tier in ("official", "community", "private") else None
        return rule if isinstance(rule, TierTrust) else self.official
