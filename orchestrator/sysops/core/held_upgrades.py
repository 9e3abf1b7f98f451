"""The roll gate of held upgrades and minimum ratings (registered in core/roll_gates.py, after the trust gate).

An upgrade whose manifest asks for more than the version serving now, of a plugin the policy's
`hold_upgrades` covers (`installed`, the default: plugins installed from a package, git, an index or a
registry, whose new version someone else wrote; `all`: also plugins brought up from a directory, whose
operator typed `plugin up` or saved the file under `--watch`; `none`), (core/manifest_growth.py: permissions,
secrets, network, limits) is not rolled: the gate records the pending target in
`$SYSOPS_HOME/held/<key>.json` (0600, in a 0700 directory) and refuses with exit code 9, naming what grew and
`sysops plugin approve NAME`; the old version keeps serving, untouched. `plugin approve` shows the record
(the `held` view of the control API), marks it approved for exactly the digest it showed (the
`upgrade-approve` action, admin) and rolls again: the gate admits a target whose manifest digest is the
approved one, once. A first start (nothing serving) is never held, and any admitted roll of the key drops
its held record (a later version asking nothing more replaces a held one).

The policy's `min_rating` refuses, also with exit code 9, a plugin whose rating (core/rating.py) is lower,
first start or upgrade alike.

The digest is the SHA-256 of the manifest as the gate sees it (after policy, JSON), so an approval holds for
that manifest under that policy and nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sysops.core.dependencies import plugin_name_of
from sysops.core.manifest import Manifest
from sysops.core.manifest_growth import growth
from sysops.core.names import check_plugin_name, shown
from sysops.core.policy import Policy, load_policy
from sysops.core.rating_inputs import rating_of
from sysops.core.rollout import RollTarget
from sysops.distribution.installs import load_installs
from sysops.errors import NotFoundError, PolicyDeniedError, UsageError
from sysops.private_paths import ensure_private_dir, write_private_file
from sysops.settings import Settings

if TYPE_CHECKING:
    from sysops.core.roll_gates import RollGate  # roll_gates imports this module

HELD_DIR = "held"
#: The control API's view of a held upgrade and the action approving it (server/operator_api.py).
HELD_VIEW = "held"
APPROVE_ACTION = "upgrade-approve"


@dataclass(frozen=True)
class HeldUpgrade:
    """A roll the gate held: what it would have rolled to, what grew, and whether an operator approved it."""

    key: str
    serving_version: str
    version: str
    grew: list[str]
    digest: str
    manifest: dict[str, Any]
    serving_manifest: dict[str, Any]
    image: str
    image_id: str
    fingerprint: str
    source: str
    held_at: float
    approved: bool = False
    rating_before: int = 0
    rating_after: int = 0


def manifest_digest(manifest: Manifest) -> str:
    """The SHA-256 (hex) of the manifest as the gate sees it."""
    return hashlib.sha256(manifest.model_dump_json().encode()).hexdigest()


def held_path(home: Path, key: str) -> Path:
    """The held record of `key` (a plugin name or side-by-side key, checked)."""
    return home / HELD_DIR / f"{check_plugin_name(key)}.json"


def load_held(home: Path, key: str) -> HeldUpgrade | None:
    """The held upgrade of `key`, or None; a damaged record is refused with a line naming its file."""
    path = held_path(home, key)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        held = HeldUpgrade(**data)
        _check_held_fields(held, key)
        return held
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(
            f"{path}: not a held upgrade record ({exc})",
            hint="remove it; the next `plugin up` of that version is held again",
        ) from None


#: The JSON type of each field of a held record (a damaged record must not reach `plugin approve` as another type).
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "grew": list,
    "manifest": dict,
    "serving_manifest": dict,
    "held_at": (int, float),
    "approved": bool,
    "rating_before": int,
    "rating_after": int,
}


def _check_held_fields(held: HeldUpgrade, key: str) -> None:
    """Raise TypeError or ValueError when a loaded record's fields have the wrong types or it names another key."""
    for name, value in asdict(held).items():
        expected = _FIELD_TYPES.get(name, str)
        if not isinstance(value, expected) or (name != "approved" and isinstance(value, bool)):
            raise TypeError(f"field {name!r} has the wrong type")
    if not all(isinstance(line, str) for line in held.grew):
        raise TypeError("field 'grew' holds a value that is not a string")
    if held.key != key:
        raise ValueError(f"it is the record of {held.key!r}")


def save_held(home: Path, held: HeldUpgrade) -> None:
    """Write the held record, 0600 from its first byte."""
    path = held_path(home, held.key)
    ensure_private_dir(path.parent)
    write_private_file(path, json.dumps(asdict(held), indent=2))


def drop_held(home: Path, key: str) -> None:
    """Forget the held upgrade of `key` (nothing happens when there is none)."""
    with contextlib.suppress(FileNotFoundError):
        held_path(home, key).unlink()


#: Install kinds (distribution/installs.py) whose upgrades come from someone else's release.
_DISTRIBUTED_KINDS = frozenset({"pip", "git", "index", "oci"})


def _held_by_policy(policy: Policy, home: Path, manifest: Manifest) -> bool:
    """Whether the policy's `hold_upgrades` covers this plugin's upgrades."""
    if policy.hold_upgrades != "installed":
        return policy.hold_upgrades == "all"
    record = load_installs(home).get(plugin_name_of(manifest.name))
    return record is not None and record.kind in _DISTRIBUTED_KINDS


def held_upgrade_gate(settings: Settings) -> RollGate:
    """The gate: refuse below the policy's `min_rating`, hold an upgrade asking for more than what serves."""

    def gate(target: RollTarget, serving: Manifest | None) -> None:
        home = settings.home
        manifest = target.manifest
        policy = load_policy(home)
        rating = rating_of(home, manifest, target.image_id, policy)
        if policy.min_rating is not None and rating.score < policy.min_rating:
            raise PolicyDeniedError(
                f"{manifest.name} {manifest.version} is rated {rating.score}, below the policy's min_rating "
                f"{policy.min_rating}{f' ({policy.source})' if policy.source else ''}: {'; '.join(rating.reasons)}",
                hint="ask less of the plugin (docs/rating-and-upgrades.md), or lower min_rating",
            )
        grew = growth(serving, manifest) if serving is not None and _held_by_policy(policy, home, manifest) else []
        digest = manifest_digest(manifest)
        held = load_held(home, manifest.name)
        if not grew or (held is not None and held.approved and held.digest == digest):
            drop_held(home, manifest.name)
            return
        assert serving is not None
        before = rating_of(home, serving, target.image_id, policy).score  # same image facts: the manifests differ
        save_held(
            home,
            HeldUpgrade(
                key=manifest.name,
                serving_version=serving.version,
                version=manifest.version,
                grew=grew,
                digest=digest,
                manifest=manifest.model_dump(mode="json"),
                serving_manifest=serving.model_dump(mode="json"),
                image=target.image,
                image_id=target.image_id,
                fingerprint=target.fingerprint,
                source=target.source,
                held_at=time.time(),
                rating_before=before,
                rating_after=rating.score,
            ),
        )
        raise PolicyDeniedError(
            f"upgrade of {manifest.name} {serving.version} -> {manifest.version} is held: it asks for more than "
            f"the version serving ({'; '.join(grew)}); {serving.version} keeps serving",
            hint=f"review and approve it with `sysops plugin approve {manifest.name}`",
        )

    return gate


def held_view(home: Path, key: str) -> dict[str, Any]:
    """The control API's `held` view: the held upgrade of `key` (exit 8 when there is none)."""
    held = load_held(home, key)
    if held is None:
        raise NotFoundError(f"no held upgrade of {shown(key)}", hint="`sysops plugin status NAME` shows what serves")
    return asdict(held)


def approve(home: Path, arguments: dict[str, Any]) -> dict[str, Any]:
    """The `upgrade-approve` action: {"plugin", "digest"} marks that held upgrade approved, digest checked."""
    key = arguments.get("plugin")
    digest = arguments.get("digest")
    if not isinstance(key, str) or not isinstance(digest, str) or not digest:
        raise UsageError(f"{APPROVE_ACTION}: arguments 'plugin' and 'digest' must be non-empty strings")
    held = load_held(home, key)
    if held is None:
        raise NotFoundError(f"no held upgrade of {shown(key)}")
    if held.digest != digest:
        raise UsageError(
            f"the held upgrade of {key} changed since it was shown (now {held.version}, digest {held.digest[:12]})",
            hint=f"run `sysops plugin approve {key}` again to review it",
        )
    save_held(home, HeldUpgrade(**{**asdict(held), "approved": True}))
    return {"plugin": key, "version": held.version, "digest": digest, "approved": True}
