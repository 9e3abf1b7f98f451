"""The one build path from a plugin directory to a tagged plugin image, for the local host and for servers.

The CLI builds with the local engine before it asks the host (or a remote server) to roll, and the
in-process orchestrator builds the same way: one repository formula (`[REGISTRY/]sysops-plugins/
<installation>-<plugin>`, tagged `<version>-<fingerprint>`), one set of labels (installation, plugin,
version: a `down --purge` of that installation finds the image and its build layers), one base-image check.
The fingerprint is known before anything is built, so a caller can skip the build when nothing changed.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sysops.core import safe_yaml
from sysops.core.manifest import Manifest, parse_manifest
from sysops.errors import StartFailedError
from sysops.imaging.context import BuildContext
from sysops.imaging.dev_code import snapshot_code
from sysops.imaging.image import image_tag, make_context
from sysops.runtime.base import LABEL_INSTALLATION, LABEL_PLUGIN, LABEL_VERSION, BuildRequest, BuiltImage
from sysops.trust.keys import signing_key
from sysops.trust.signature_store import cache_signature, cached_signatures, push_signatures, split_reference
from sysops.trust.signing import sign


class ImageBuilder(Protocol):
    """What a build needs of a driver."""

    def image_id(self, reference: str) -> str | None:
        """The id of an image, or None when the engine does not have it."""

    def build_image(self, request: BuildRequest, progress: Callable[[str], None]) -> BuiltImage:
        """Build an image from a context tar."""


def plugin_repository(installation_id: str, plugin: str, registry: str = "") -> str:
    """The image repository of a plugin of an installation (in `registry` when given)."""
    prefix = f"{registry.rstrip('/')}/" if registry else ""
    return f"{prefix}sysops-plugins/{installation_id}-{plugin}"


@dataclass
class PluginBuild:
    """A prepared build: its fingerprint and tag are known; `build()` makes the image."""

    driver: ImageBuilder
    context: BuildContext
    tag: str
    progress: Callable[[str], None]

    #: The installation's state directory: its signing key and signature cache (trust/).
    home: Path
    #: Development mode: the fingerprint of the code snapshot the image is run with (imaging/dev_code.py).
    dev_fingerprint: str = ""

    @property
    def fingerprint(self) -> str:
        """Hash of everything that goes into the instance: the image (and, in development mode, the code)."""
        return self.dev_fingerprint or self.context.fingerprint

    def build(self) -> BuiltImage:
        """Build the image and sign it with the installation's key (trust/keys.py `signing_key`): the signature
        covers the image id and the plugin.yaml shipped in the context; it goes to the signature cache and, for
        an image in a registry, beside it there. The context tar is removed once the engine has it."""
        self.progress(f"building image {self.tag}")
        with self.context:
            built = self.driver.build_image(BuildRequest(context=self.context.tar_path, tag=self.tag), self.progress)
            with tarfile.open(self.context.tar_path) as archive:
                shipped = archive.extractfile("plugin/plugin.yaml")
                text = shipped.read(safe_yaml.MAX_BYTES + 1).decode() if shipped else ""
        manifest = parse_manifest(safe_yaml.load(text), f"{self.tag}: plugin.yaml")
        private_key, signer = signing_key(self.home)
        signature = sign(private_key, signer, manifest, built.id)
        cache_signature(self.home, built.id, signature)
        if split_reference(self.tag) is not None:
            push_signatures(self.tag, built.id, cached_signatures(self.home, built.id))
        self.progress(f"signed {built.id[:19]} with key {signer}")
        return built


@contextmanager
def plugin_build(
    driver: ImageBuilder,
    plugin_dir: Path,
    manifest: Manifest,
    *,
    base_image: str,
    installation_id: str,
    cache_dir: Path,
    progress: Callable[[str], None],
    registry: str = "",
    dev_key: str = "",
) -> Iterator[PluginBuild]:
    """Prepare the build of `plugin_dir` (context written, fingerprint known); remove the context afterwards.

    `dev_key`: development mode, for the plugin's store key (its name, or its side-by-side key): the image gets
    the dependencies and plugin.yaml, and the code goes to a snapshot in the installation's state directory,
    which each instance mounts (imaging/dev_code.py), so a code-only change leaves the image, and its tag, as
    they were.
    """
    base_image_id = driver.image_id(base_image)
    if base_image_id is None:
        raise StartFailedError(
            f"base image {base_image} not found",
            hint="build it with plugin-base-image/build.sh (scripts/bootstrap.sh does it)",
        )
    labels = {LABEL_INSTALLATION: installation_id, LABEL_PLUGIN: manifest.name, LABEL_VERSION: manifest.version}
    home = cache_dir.parent  # Settings.cache_dir: home/cache
    with make_context(plugin_dir, manifest, base_image_id, cache_dir, labels, code=not dev_key) as context:
        tag = image_tag(
            plugin_repository(installation_id, manifest.name, registry), manifest.version, context.fingerprint
        )
        dev_fingerprint = ""
        if dev_key:
            dev_fingerprint = snapshot_code(home, dev_key, plugin_dir, context.entries, context.fingerprint)
        yield PluginBuild(driver, context, tag, progress, home=home, dev_fingerprint=dev_fingerprint)
