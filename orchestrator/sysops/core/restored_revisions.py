"""Revisions a restarted server reads back from its state mirror, checked before the store takes them.

The mirror lives outside the server (on Kubernetes, Plugin objects: whoever may patch them may write them), so
what it holds is input, not truth. A revision is restored only when it has the keys and types the store needs,
its manifest parses as this plugin's, and its images are this installation's (`check_image`, the server's own
image check): otherwise a later rollback would start an image no one admitted, and a malformed revision would
raise inside startup, so every server replica would crash-loop on it. A bad revision is refused with one line
naming it (the caller logs and skips it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sysops.core.catalog import parse_stored_manifest
from sysops.core.dependencies import plugin_name_of
from sysops.errors import SysopsError
from sysops.store import RevisionRecord

#: Raises (a SysopsError) when an image reference is not one of this installation's images of the plugin.
ImageCheck = Callable[[str, str], None]


class BadRevision(ValueError):
    """A mirrored revision that must not be restored (the message says why)."""


def _text(raw: Mapping[str, object], key: str, *, required: bool = True) -> str:
    value = raw.get(key, None if required else "")
    if not isinstance(value, str) or (required and not value):
        raise BadRevision(f"{key} must be a non-empty string, not {value!r}")
    return value


def _revision_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit() or int(value) < 1:
        raise BadRevision(f"revision must be a positive integer, not {value!r}")
    return int(value)


def restored_revision(plugin: str, raw: object, check_image: ImageCheck | None) -> RevisionRecord:
    """The store record of one mirrored revision of `plugin` (its key), or BadRevision saying what is wrong."""
    if not isinstance(raw, Mapping):
        raise BadRevision(f"a revision must be an object, not {type(raw).__name__}")
    revision = _revision_number(raw.get("revision"))
    version, image = _text(raw, "version"), _text(raw, "image")
    image_id = _text(raw, "image_id", required=False) or image
    manifest = raw.get("manifest")
    if not isinstance(manifest, Mapping):
        raise BadRevision(f"revision {revision}: manifest must be an object")
    created = raw.get("created", 0)
    if isinstance(created, bool) or not isinstance(created, (int, float)):
        raise BadRevision(f"revision {revision}: created must be a number, not {created!r}")
    try:
        parsed = parse_stored_manifest(manifest, f"revision {revision}'s manifest")
        if parsed.name != plugin:
            raise BadRevision(f"revision {revision}: its manifest names {parsed.name!r}")
        if check_image is not None:
            for reference in dict.fromkeys((image, image_id)):
                check_image(reference, plugin_name_of(plugin))
    except SysopsError as exc:
        raise BadRevision(f"revision {revision}: {exc.message}") from None
    return RevisionRecord(
        plugin=plugin,
        revision=revision,
        version=version,
        image=image,
        image_id=image_id,
        fingerprint=_text(raw, "fingerprint", required=False),
        manifest=dict(manifest),
        created=float(created),
    )
