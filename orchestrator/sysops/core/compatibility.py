"""Compatibility: does a plugin fit the sysops, Python, SDK and protocol it would run with, now and after an upgrade.

A plugin's manifest names the ranges it works with (`compatibility: {sysops, python, sdk}`); the base image says
what it carries in labels (`sysops.python`, `sysops.sdk`, `sysops.protocol`, set by plugin-base-image/build.sh),
and every plugin image built on it inherits them. So the checks are:

- `check_sysops`: the manifest's `compatibility.sysops` against this sysops (the host's own version), before
  anything is built or started;
- `check_image`: the manifest's `compatibility.python` and `compatibility.sdk` against the built image's labels,
  and the image's SDK protocol major against this orchestrator's: the CLI runs it on the image it built before it
  asks the host to roll, and the host again wherever its runtime driver can read image labels (Docker; not
  Kubernetes, where the CLI's check is the one). A label the image lacks (a base image built before the labels)
  is not checked.

Each unmet range is one line, "plugin x 1.0 needs sysops >=0.3, this is 0.2.1", after the file and key it comes
from; a refusal is one ManifestError (exit 4) with every line joined by "; ".

`sysops plugin doctor` builds its matrix from `verdict` (ok, or "needs RANGE" per column) and `breaks_on_upgrade`
(the next sysops minor and major, the next Python minor and the next SDK minor a plugin that fits now would not).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version
from sysops_sdk.wire import PROTOCOL_VERSION

from sysops import __version__
from sysops.core.manifest import Manifest
from sysops.errors import ManifestError

#: Image labels of the base image (inherited by every plugin image built on it).
LABEL_PYTHON = "sysops.python"
LABEL_SDK = "sysops.sdk"
LABEL_PROTOCOL = "sysops.protocol"

#: The manifest's compatibility keys and how a message names each.
SHOWN = {"sysops": "sysops", "python": "Python", "sdk": "SDK"}

_HINT = "change compatibility in plugin.yaml, or run it where the versions fit (`sysops plugin doctor` shows them)"


@dataclass(frozen=True)
class Platform:
    """The versions a plugin would run with; "" where unknown (an image without labels, no base image)."""

    sysops: str = __version__
    python: str = ""
    sdk: str = ""
    protocol: str = ""

    @classmethod
    def from_labels(cls, labels: Mapping[str, str] | None, sysops: str = __version__) -> Platform:
        """The platform of an image, from its labels (None: labels not readable)."""
        labels = labels or {}
        return cls(sysops, labels.get(LABEL_PYTHON, ""), labels.get(LABEL_SDK, ""), labels.get(LABEL_PROTOCOL, ""))

    def version_of(self, key: str) -> str:
        """The version for a compatibility key (sysops, python or sdk)."""
        return str(getattr(self, key))


@dataclass(frozen=True)
class Unmet:
    """One compatibility range the platform does not satisfy."""

    key: str  # sysops | python | sdk
    needs: str  # the manifest's range
    have: str  # the platform's version

    def line(self, plugin: str, version: str) -> str:
        """'plugin x 1.0 needs sysops >=0.3, this is 0.2.1'."""
        return f"plugin {plugin} {version} needs {SHOWN[self.key]} {self.needs}, this is {self.have}"


def fits(needs: str, version: str) -> bool:
    """Say whether `version` is in the range `needs` (pre-releases count; an unknown version fits)."""
    if not version:
        return True
    try:
        return Version(version) in SpecifierSet(needs, prereleases=True)
    except InvalidVersion:
        return True  # a version that is not PEP 440 cannot be compared: not a refusal


def unmet(ranges: Mapping[str, str], platform: Platform, keys: tuple[str, ...] = tuple(SHOWN)) -> list[Unmet]:
    """The ranges among `keys` (of a manifest's compatibility, as a mapping) the platform does not satisfy."""
    return [
        Unmet(key, ranges[key], platform.version_of(key))
        for key in keys
        if key in ranges and not fits(ranges[key], platform.version_of(key))
    ]


def ranges_of(manifest: Manifest) -> dict[str, str]:
    """A manifest's compatibility ranges as a mapping."""
    return {key: str(getattr(manifest.compatibility, key)) for key in SHOWN}


def protocol_fits(protocol: str, ours: str = PROTOCOL_VERSION) -> bool:
    """Say whether an image's SDK protocol ("MAJOR.MINOR") has our major (unknown: fits)."""
    return not protocol or protocol.split(".", 1)[0] == ours.split(".", 1)[0]


def _refuse(manifest_path: str, lines: list[str]) -> None:
    if lines:
        raise ManifestError(f"{manifest_path}: " + "; ".join(lines), hint=_HINT)


def check_sysops(manifest: Manifest, manifest_path: str, sysops: str = __version__) -> None:
    """Refuse a plugin whose compatibility.sysops does not hold this sysops (before anything is built)."""
    found = unmet(ranges_of(manifest), Platform(sysops), ("sysops",))
    _refuse(manifest_path, [f"key 'compatibility.{u.key}': {u.line(manifest.name, manifest.version)}" for u in found])


def check_image(manifest: Manifest, labels: Mapping[str, str] | None, source: str) -> None:
    """Refuse a built plugin image whose Python, SDK or SDK protocol major does not fit (before it starts).

    `labels` are the image's (None: not readable, nothing checked); `source` is the plugin directory the error
    names (its plugin.yaml). compatibility.sysops is the host's check (`check_sysops`): the host may be another
    sysops version than the CLI that built the image.

    The CLI (cli/remote.py `up`) calls it right after the build, with `driver.image_labels(build.tag)`, and on
    a refusal removes the image it built (unless the engine had that tag before the build) before it raises.
    """
    platform = Platform.from_labels(labels)
    lines = [
        f"key 'compatibility.{u.key}': {u.line(manifest.name, manifest.version)} (in its image)"
        for u in unmet(ranges_of(manifest), platform, ("python", "sdk"))
    ]
    if not protocol_fits(platform.protocol):
        lines.append(
            f"plugin {manifest.name} {manifest.version}: its image's SDK speaks protocol {platform.protocol}, "
            f"this sysops speaks {PROTOCOL_VERSION} (another major version)"
        )
    _refuse(f"{source.rstrip('/')}/plugin.yaml", lines)


def verdict(ranges: Mapping[str, str], platform: Platform, key: str) -> str:
    """A doctor cell: "ok", "needs RANGE" (with the version there is), or "unknown" (no version to compare)."""
    have = platform.version_of(key)
    if not have:
        return "unknown"
    needs = ranges.get(key, "")
    return "ok" if not needs or fits(needs, have) else f"needs {needs} (is {have})"


def next_versions(platform: Platform) -> list[tuple[str, str]]:
    """The upgrades the doctor looks at: (key, version) for the next sysops minor and major, Python minor, SDK minor."""
    upgrades: list[tuple[str, str]] = []
    for key, majors in (("sysops", True), ("python", False), ("sdk", False)):
        try:
            current = Version(platform.version_of(key))
        except InvalidVersion:
            continue  # unknown ("") or not comparable
        upgrades.append((key, f"{current.major}.{current.minor + 1}"))
        if majors:
            upgrades.append((key, f"{current.major + 1}.0"))
    return upgrades


def breaks_on_upgrade(ranges: Mapping[str, str], platform: Platform) -> list[str]:
    """The upgrades ("sysops 0.2", "Python 3.12") that would break a plugin that fits that version now."""
    return [
        f"{SHOWN[key]} {version}"
        for key, version in next_versions(platform)
        if key in ranges and fits(ranges[key], platform.version_of(key)) and not fits(ranges[key], version)
    ]


def doctor_row(name: str, version: str, where: str, ranges: Mapping[str, str], platform: Platform) -> dict[str, Any]:
    """One row of `sysops plugin doctor`: the plugin, a verdict per column, and the upgrades that break it."""
    return {
        "name": name,
        "version": version,
        "where": where,
        **{key: verdict(ranges, platform, key) for key in SHOWN},
        "breaks_on_upgrade": breaks_on_upgrade(ranges, platform),
    }


def row_fits(row: Mapping[str, Any]) -> bool:
    """Say whether a doctor row fits the versions there are now (an unknown version is not a misfit)."""
    return all(row[key] in ("ok", "unknown") for key in SHOWN)
