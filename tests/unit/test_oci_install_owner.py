"""An image from a registry must not take over an installed plugin of another source by naming it.

The plugin.yaml inside the image names the plugin: installing REGISTRY/other@sha256:... whose plugin is `bar`,
installed from an index or another repository, would replace bar's record (tier), code, data and secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from sysops.distribution.installs import InstallRecord, save_install
from sysops.distribution.oci import ImageRef, refuse_another_image_source
from sysops.errors import UsageError

DIGEST = "sha256:" + "b" * 64


def test_an_image_naming_a_plugin_installed_from_elsewhere_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    pulled = ImageRef("127.0.0.1:5000/other/bar", "", DIGEST)
    refuse_another_image_source(home, "bar", pulled)  # nothing installed: allowed
    save_install(home, InstallRecord("bar", "bar", "index", "1.0.0", "official", "/pkgs/bar-dist/bar", index="m"))
    with pytest.raises(UsageError, match=r"plugin bar is installed already from 'bar' \(index, tier official\)"):
        refuse_another_image_source(home, "bar", pulled)
    same_repository = InstallRecord(
        "bar", "x", "oci", "1.0.0", "community", "", image=f"127.0.0.1:5000/other/bar@sha256:{'a' * 64}"
    )
    save_install(home, same_repository)
    refuse_another_image_source(home, "bar", pulled)  # a new digest of the same repository: an upgrade
    save_install(home, InstallRecord("bar", "x", "oci", "1.0.0", "community", "", image=f"r.example/bar@{DIGEST}"))
    with pytest.raises(UsageError, match="installed already"):
        refuse_another_image_source(home, "bar", pulled)
