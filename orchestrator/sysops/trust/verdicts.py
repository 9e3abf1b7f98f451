"""The last trust decision for each image, kept for what rates plugins (core/rating.py) and for `plugin verify`.

The trust gate records, per image config digest, the plugin's tier, whether a signature admitted it and whose
(key id and name), in `$SYSOPS_HOME/cache/verdicts/<digest hex>.json` (0600, replaced atomically).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from sysops.private_paths import ensure_private_dir, write_private_file
from sysops.trust.signature_store import check_digest


@dataclass(frozen=True)
class Verdict:
    """A trust decision for an image."""

    plugin: str
    image_digest: str
    tier: str
    signed: bool
    signer_key_id: str = ""
    signer_name: str = ""


def verdict_path(home: Path, image_digest: str) -> Path:
    """The file of an image's verdict."""
    return home / "cache" / "verdicts" / f"{check_digest(image_digest)}.json"


def record_verdict(home: Path, verdict: Verdict) -> None:
    """Keep `verdict` as the last one of its image."""
    directory = ensure_private_dir(ensure_private_dir(ensure_private_dir(home) / "cache") / "verdicts")
    write_private_file(directory / verdict_path(home, verdict.image_digest).name, json.dumps(asdict(verdict)))


def load_verdict(home: Path, image_digest: str) -> Verdict | None:
    """The last verdict of an image, None when there is none (or the file is not one)."""
    try:
        data = json.loads(verdict_path(home, image_digest).read_text(encoding="utf-8"))
        return Verdict(**data) if isinstance(data, dict) else None
    except (OSError, ValueError, TypeError):
        return None
