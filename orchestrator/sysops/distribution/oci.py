"""Plugin images in an OCI registry: push a plugin's serving image, pull one by digest, run it by digest.

A registry tag can be moved to another image at any time, so sysops pins images by their manifest digest
(`REGISTRY/REPO@sha256:...`): `pull` refuses an image whose digest is not the one asked for (naming both),
and a plugin installed from a registry runs `REPO@sha256:...`, checked against the local image just before
its roll. The plugin.yaml is read out of the image (`/plugin/plugin.yaml`, from a created container that is
never started), so nothing of a pulled image runs before the orchestrator admits it.

Entry points:
- `push_plugin_image(driver, image, plugin, version, registry, progress) -> PushedImage`
  (`sysops plugin push`): tags the image `REGISTRY/sysops-plugins/<installation>-<plugin>:<version>`,
  pushes it and returns the digest the registry recorded.
- `pull_verified(driver, ref, progress) -> PulledImage` (`sysops plugin pull`): pulls `REPO@sha256:...` or
  `REPO:TAG@sha256:...` (the tag is pulled, then its digest must be the one given), reads the manifest.
- `install_from_oci(home, ref, progress, roll, *, installation_id, registry="", tier="community", index="")
  -> InstanceRecord` (`sysops plugin install oci://...`; the CLI calls it through cli/registry_cmd.py
  `install_oci_ref(spec, tier=..., index=...)`, which supplies the rest): pull_verified, tag the image into the
  installation's own repository and check that tag's digest, cache the signatures the registry holds beside
  the image (`sha256-<hex>.sig`, trust/signature_store.py) for the trust gate, save the install record (kind
  `oci`, image `REPO@sha256:<manifest digest>`) so the gate sees the plugin's tier, then `roll(manifest, image,
  fingerprint, source)` - the control-API client's `up_image` (cli/remote.py); a failed roll puts the previous
  record back. `tier` is the index's tier when an index entry lists that digest, else `community`.
- `push_signatures_beside(home, pushed, progress)`: `plugin push` also pushes the image's cached signatures.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sysops.core.manifest import MANIFEST_FILE, Manifest, load_manifest
from sysops.distribution.installs import (
    InstallRecord,
    installed_elsewhere,
    load_installs,
    remove_install,
    save_install,
)
from sysops.errors import ManifestError, StartFailedError, UsageError
from sysops.imaging.image import image_tag
from sysops.imaging.plugin_image import plugin_repository
from sysops.runtime.base import LABEL_PLUGIN
from sysops.store import InstanceRecord
from sysops.trust.signature_store import cache_signature, cached_signatures, push_signatures, registry_signatures

OCI_SCHEME = "oci://"
#: Where the image builder puts the plugin directory (imaging/image.py: COPY plugin/ /plugin/).
MANIFEST_IN_IMAGE = f"/plugin/{MANIFEST_FILE}"
#: plugin.yaml's own limit (core/safe_yaml.py) is checked again when it is parsed.
MAX_MANIFEST_BYTES = 64 * 1024
REPOSITORY_PREFIX = "sysops-plugins/"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REGISTRY_HOST = r"(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|[A-Za-z0-9-]+(?=:))(?::[0-9]{1,5})?"
_REFERENCE = re.compile(
    rf"(?P<repository>{_REGISTRY_HOST}(?:/{_COMPONENT})+)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)

Progress = Callable[[str], None]
#: Rolls a plugin to an image already in the engine or registry: the control-API client's `up_image`.
RollImage = Callable[[Manifest, str, str, str], tuple[InstanceRecord, bool]]


class DigestMismatchError(StartFailedError):
    """An image is not the one its digest pins (a moved tag, a replaced image): refused, exit code 6."""


class RegistryEngine(Protocol):
    """What registry operations need of the Docker driver (runtime/docker/driver.py)."""

    def image_id(self, reference: str) -> str | None:
        """The id of a local image, or None."""

    def image_labels(self, reference: str) -> dict[str, str] | None:
        """A local image's labels, or None."""

    def pull_image(self, reference: str, progress: Progress) -> str:
        """Pull a reference; return the local image id."""

    def push_image(self, reference: str) -> None:
        """Push a tagged image to its registry."""

    def repo_digests(self, reference: str) -> list[str]:
        """The `REPO@sha256:...` digests of a local image."""

    def tag_image(self, image: str, repository: str, tag: str) -> None:
        """Tag a local image."""

    def remove_image(self, reference: str) -> None:
        """Remove an image if present."""

    def read_image_file(self, image: str, path: str, max_bytes: int) -> bytes | None:
        """A file's content from an image, without running it."""


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference: `REGISTRY/PATH[:TAG][@sha256:HEX]` (the registry host is required)."""

    repository: str
    tag: str = ""
    digest: str = ""

    @property
    def by_digest(self) -> str:
        """`REPOSITORY@sha256:...`, what a plugin installed from this reference runs."""
        return f"{self.repository}@{self.digest}"

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.repository}{tag}{digest}"


@dataclass(frozen=True)
class PushedImage:
    """An image in a registry: its repository, tag, and the manifest digest the registry recorded."""

    repository: str
    tag: str
    digest: str
    image_id: str

    @property
    def by_digest(self) -> str:
        """`REPOSITORY@sha256:...`, the reference to install or pull."""
        return f"{self.repository}@{self.digest}"


@dataclass(frozen=True)
class PulledImage:
    """An image pulled and verified by digest, with the plugin.yaml read out of it."""

    ref: ImageRef
    image_id: str
    manifest: Manifest


def is_oci_ref(spec: str) -> bool:
    """Whether an install spec names an image in a registry (`oci://...` or `...@sha256:...`)."""
    return spec.startswith(OCI_SCHEME) or "@sha256:" in spec


def parse_ref(text: str, *, require_digest: bool = True) -> ImageRef:
    """Parse `[oci://]REGISTRY/PATH[:TAG][@sha256:HEX]`; bad input is a UsageError naming the reference."""
    raw = text.removeprefix(OCI_SCHEME)
    match = _REFERENCE.fullmatch(raw) if len(raw) <= 1024 else None
    if match is None:
        raise UsageError(
            f"{text[:200]!r} is not an image reference",
            hint="write REGISTRY/PATH@sha256:<64 hex> (e.g. 127.0.0.1:5000/sysops-plugins/x@sha256:...)",
        )
    ref = ImageRef(match["repository"], match["tag"] or "", match["digest"] or "")
    if require_digest and not ref.digest:
        raise UsageError(
            f"{text[:200]!r} has no digest; a tag can be moved to another image",
            hint="pin the image: REPOSITORY@sha256:<digest> (`sysops plugin push` prints it)",
        )
    return ref


def registry_repository(serving_image: str, registry: str) -> str:
    """`REGISTRY/sysops-plugins/<installation>-<plugin>` for a serving image `[R/]sysops-plugins/<...>:<tag>`."""
    name = serving_image.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name.rsplit(":", 1)[0]
    start = name.find(REPOSITORY_PREFIX)
    if start < 0:
        raise UsageError(f"image {serving_image} is not a sysops plugin image", hint="`sysops plugin up` it first")
    return f"{registry.rstrip('/')}/{name[start:]}"


def push_plugin_image(
    engine: RegistryEngine, image: str, plugin: str, version: str, registry: str, progress: Progress
) -> PushedImage:
    """Tag `image` (a serving revision's image) as `REGISTRY/sysops-plugins/<installation>-<plugin>:<version>`,
    push it, and return the manifest digest the registry recorded for it."""
    parse_ref(f"{registry.rstrip('/')}/{REPOSITORY_PREFIX}x", require_digest=False)  # refuse a bad registry early
    image_id = engine.image_id(image)
    if image_id is None:
        raise StartFailedError(f"image {image} of plugin {plugin} is not in this engine", hint="`sysops plugin up` it")
    repository = registry_repository(image, registry)
    tag = image_tag(repository, version, "x").rsplit(":", 1)[1].removesuffix("-x")
    engine.tag_image(image_id, repository, tag)
    progress(f"pushing {repository}:{tag}")
    engine.push_image(f"{repository}:{tag}")
    digests = [d for d in engine.repo_digests(image_id) if d.split("@", 1)[0] == repository]
    if not digests:
        raise StartFailedError(f"the registry recorded no digest for {repository}:{tag}")
    return PushedImage(repository, tag, digests[0].split("@", 1)[1], image_id)


def verify_digest(engine: RegistryEngine, local: str, ref: ImageRef) -> None:
    """Refuse the local image `local` unless the engine records it under `ref`'s repository and digest."""
    digests = engine.repo_digests(local)
    if ref.by_digest in digests:
        return
    found = [d.split("@", 1)[1] for d in digests if d.split("@", 1)[0] == ref.repository]
    shown = ", ".join(found) if found else ("no digest" if digests or engine.image_id(local) else "no local image")
    where = f"tag {ref.tag} of {ref.repository}" if ref.tag and local != ref.by_digest else ref.by_digest
    raise DigestMismatchError(
        f"digest mismatch for {where}: expected {ref.digest}, found {shown}",
        hint="the image is not the one pinned (a moved tag or a replaced image); use the digest you trust",
    )


def pull_verified(engine: RegistryEngine, ref: ImageRef, progress: Progress) -> PulledImage:
    """Pull `ref` and verify its digest; read the plugin.yaml out of the image without running it.

    With a tag (`REPO:TAG@sha256:...`) the tag is pulled, i.e. whatever the registry serves for it now, and
    refused (and removed, unless the engine had it before) when its digest is not the one given.
    """
    pulled_as = f"{ref.repository}:{ref.tag}" if ref.tag else ref.by_digest
    had = engine.image_id(pulled_as)
    image_id = engine.pull_image(pulled_as, progress)
    try:
        verify_digest(engine, pulled_as, ref)
    except DigestMismatchError:
        if had is None or had != image_id:
            engine.remove_image(pulled_as)
        raise
    manifest = read_manifest(engine, ref.by_digest)
    return PulledImage(ImageRef(ref.repository, "", ref.digest), image_id, manifest)


def read_manifest(engine: RegistryEngine, image: str) -> Manifest:
    """The plugin.yaml inside `image` (never run), validated like a directory's; its name must match the image's
    `sysops.plugin` label."""
    where = f"{image}:{MANIFEST_IN_IMAGE}"
    content = engine.read_image_file(image, MANIFEST_IN_IMAGE, MAX_MANIFEST_BYTES)
    if content is None:
        raise ManifestError(f"{where}: no such file (or larger than {MAX_MANIFEST_BYTES} bytes)", hint=_NOT_PLUGIN)
    with tempfile.TemporaryDirectory(prefix="sysops-oci-") as scratch:
        (Path(scratch) / MANIFEST_FILE).write_bytes(content)
        try:
            manifest = load_manifest(Path(scratch))
        except ManifestError as error:
            message = error.message.replace(str(Path(scratch) / MANIFEST_FILE), where)
            raise ManifestError(message, hint=error.hint) from None
    label = (engine.image_labels(image) or {}).get(LABEL_PLUGIN)
    if label != manifest.name:
        raise ManifestError(f"{where}: plugin {manifest.name!r} but the image is labelled {label!r}", hint=_NOT_PLUGIN)
    return manifest


def install_from_oci(
    home: Path,
    ref: str,
    progress: Progress,
    roll: RollImage,
    *,
    installation_id: str,
    registry: str = "",
    tier: str = "community",
    index: str = "",
) -> InstanceRecord:
    """Install a plugin from a registry by digest: pull and verify, read its manifest, roll it with `roll` (the
    control-API client's `up_image`), and save its install record (image `REPO@sha256:...`).

    The record is saved before the roll (the trust gate reads the plugin's tier from it) and put back as it was
    when the roll fails; the signatures beside the image in the registry are cached for the gate. The host and
    servers run only their own installation's repository (server/service.py check_own_image), so the verified
    image is tagged `[REGISTRY/]sysops-plugins/<installation>-<plugin>:<version>-<digest[:12]>` (pushed to
    `registry`, the server's, when given) and that tag is checked again, just before the roll, to name the
    image of the pinned digest; the roll's image id is that image's (content-addressed) id.
    """
    from sysops.runtime.factory import docker_driver

    engine = docker_driver()
    pinned = parse_ref(ref)
    pulled = pull_verified(engine, pinned, progress)
    manifest = pulled.manifest
    refuse_another_image_source(home, manifest.name, pulled.ref)
    local = image_tag(
        plugin_repository(installation_id, manifest.name, registry),
        manifest.version,
        pulled.ref.digest.removeprefix("sha256:"),
    )
    repository, _, tag = local.rpartition(":")
    engine.tag_image(pulled.image_id, repository, tag)
    verify_digest(engine, local, pulled.ref)  # run by digest: the tag rolled names the image pinned
    if engine.image_id(local) != pulled.image_id:
        raise DigestMismatchError(f"{local} does not name the image pulled for {pulled.ref.by_digest}")
    if registry:
        progress(f"pushing {local}")
        engine.push_image(local)
    fetch_signatures(home, pulled, progress)
    record = InstallRecord(
        name=manifest.name,
        spec=ref,
        kind="oci",
        version=manifest.version,
        tier=tier,
        directory="",
        image=pulled.ref.by_digest,
        index=index,
    )
    progress(f"installing {manifest.name} {manifest.version} from {pulled.ref.by_digest}")
    with recorded_during_roll(home, record):  # the trust gate reads the tier of the roll from the record
        instance, _ = roll(manifest, local, pulled.image_id, f"{OCI_SCHEME}{pulled.ref.by_digest}")
    return instance


def refuse_another_image_source(home: Path, plugin: str, pulled: ImageRef) -> None:
    """Refuse an image whose plugin is installed already from another source (a package, a directory, another
    repository); a new digest of the repository it was installed from is an upgrade."""
    record = load_installs(home).get(plugin)
    if record is None:
        return
    if record.kind == "oci" and record.image.partition("@")[0] == pulled.repository:
        return
    raise installed_elsewhere(record, f"image of {pulled.repository}")


@contextmanager
def recorded_during_roll(home: Path, record: InstallRecord) -> Iterator[None]:
    """Save `record` for the roll (the gates see the plugin's tier); put back what was there if the roll fails."""
    before = load_installs(home).get(record.name)
    save_install(home, record)
    try:
        yield
    except BaseException:
        if before is None:
            remove_install(home, record.name)
        else:
            save_install(home, before)
        raise


def fetch_signatures(home: Path, pulled: PulledImage, progress: Progress) -> None:
    """Cache the signatures the registry holds beside a pulled image (`sha256-<hex>.sig`), for the trust gate,
    which verifies them (a signature here is only a candidate)."""
    signatures = registry_signatures(pulled.ref.by_digest, pulled.image_id)
    for signature in signatures:
        cache_signature(home, pulled.image_id, signature)
    progress(f"{len(signatures)} signature(s) beside {pulled.ref.by_digest}")


def push_signatures_beside(home: Path, pushed: PushedImage, progress: Progress) -> None:
    """Push the cached signatures of a pushed image beside it in its repository (none cached: nothing pushed)."""
    signatures = cached_signatures(home, pushed.image_id)
    if signatures:
        target = push_signatures(pushed.by_digest, pushed.image_id, signatures)
        progress(f"pushed {len(signatures)} signature(s) as {target}")


_NOT_PLUGIN = "is it a sysops plugin image? (`sysops plugin push` publishes one)"
