"""What the server trusts of Plugin objects and old state ConfigMaps (anyone with RBAC on them may write them):
only its own installation's images, from its own registry; revisions restored only when well formed; a bad
ConfigMap skipped, never a crash of serve()."""

from __future__ import annotations

import pytest
from sysops.errors import UsageError
from sysops.server.service import check_own_image

INSTALL = "abc123"


def test_only_this_installations_repository_in_its_registry_is_accepted() -> None:
    check_own_image(f"sysops-plugins/{INSTALL}-hello:1.0.0-x", INSTALL, "hello", registry="")
    check_own_image(f"reg.local:5000/sysops-plugins/{INSTALL}-hello:1", INSTALL, "hello", registry="reg.local:5000")
    check_own_image(f"sysops-plugins/{INSTALL}-hello:1", INSTALL, "hello", registry="reg.local:5000")
    for image in (
        f"evil.example/sysops-plugins/{INSTALL}-hello:x",  # any registry would serve the attacker's image
        f"reg.local:5000/sysops-plugins/{INSTALL}-hello:1",  # a registry the server is not configured with
        f"evil/sysops-plugins/{INSTALL}-hello:1",
        f"sysops-plugins/{INSTALL}-other:1",
        f"sysops-plugins/{INSTALL}-hello",
        "evil/x",
    ):
        with pytest.raises(UsageError):
            check_own_image(image, INSTALL, "hello", registry="")


def test_the_registry_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSOPS_REGISTRY", "reg.local:5000")
    check_own_image(f"reg.local:5000/sysops-plugins/{INSTALL}-hello:1", INSTALL, "hello")
    with pytest.raises(UsageError):
        check_own_image(f"evil.example/sysops-plugins/{INSTALL}-hello:1", INSTALL, "hello")
