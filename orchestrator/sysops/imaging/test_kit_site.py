"""The pytest a plugin's tests need inside its image, for `sysops plugin test`: fetched on the host, mounted read-only.

A plugin image has no pytest and its container no network, so pytest and the test kit's other requirement
(PyYAML, to read plugin.yaml) are resolved into wheels on the host like any plugin requirement
(image.prepare_wheels, cached by their hash) and unpacked once into a directory that the test container
gets read-only on its PYTHONPATH. Unpacking a wheel is installing it for import purposes (its .dist-info keeps
the entry points pytest loads plugins from), so the plugin image itself is never changed for its tests.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from sysops.errors import BuildError
from sysops.imaging.image import prepare_wheels
from sysops.private_paths import ensure_private_dir

#: What `sysops plugin test` puts beside the plugin: the SDK's test kit runs on these (sysops-sdk[test]).
TEST_REQUIREMENTS = ["pytest>=8", "pyyaml>=6"]


def test_kit_site(cache_dir: Path, requirements: list[str] = TEST_REQUIREMENTS) -> Path:
    """A directory holding `requirements` unpacked for import, readable by the plugin's user; cached."""
    wheels = prepare_wheels(requirements, cache_dir)
    if wheels is None:
        raise BuildError("no test requirements to fetch")
    site = cache_dir / "test-kit" / wheels.name
    if (site / ".complete").exists():
        return site
    ensure_private_dir(site.parent)  # another local user must not swap what the tests import
    unpacking = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=site.parent))
    try:
        for wheel in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(unpacking)
        for directory, _, files in os.walk(unpacking):  # the plugin's user (another uid) reads it through the mount
            os.chmod(directory, 0o755)
            for name in files:
                os.chmod(os.path.join(directory, name), 0o644)
        (unpacking / ".complete").write_text("\n".join(requirements))
        os.replace(unpacking, site)
    except BaseException as exc:  # Ctrl-C or SIGTERM included: no half-unpacked directory is left behind
        shutil.rmtree(unpacking, ignore_errors=True)
        if not isinstance(exc, OSError | zipfile.BadZipFile):
            raise
        if (site / ".complete").exists():  # another run unpacked it at the same time
            return site
        raise BuildError(f"cannot unpack the test requirements into {site}: {exc}") from None
    return site
