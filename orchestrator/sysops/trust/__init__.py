"""Whether a plugin can be trusted: keys, signatures over image and manifest, and the trust policy per tier."""
