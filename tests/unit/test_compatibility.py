"""Compatibility checks (core/compatibility.py): the readable refusal lines, the image-label checks, the
orchestrator's refusal of an image before anything starts (fake driver), the doctor's matrix and the upgrades
it predicts will break a plugin."""

from __future__ import annotations

from typing import Any

import pytest
from sysops import __version__
from sysops.core.compatibility import (
    LABEL_PROTOCOL,
    LABEL_PYTHON,
    LABEL_SDK,
    Platform,
    breaks_on_upgrade,
    check_image,
    check_sysops,
    doctor_row,
    next_versions,
    row_fits,
    unmet,
    verdict,
)
from sysops.core.manifest import Manifest, parse_manifest
from sysops.core.orchestrator import Orchestrator
from sysops.errors import ExitCode, ManifestError
from sysops.runtime.fake import FakeDriver
from sysops_sdk import Plugin
from sysops_sdk.wire import PROTOCOL_VERSION

BASE_LABELS = {LABEL_PYTHON: "3.11.2", LABEL_SDK: "0.1.0", LABEL_PROTOCOL: PROTOCOL_VERSION}


def _manifest(**compatibility: str) -> Manifest:
    return parse_manifest(
        {"name": "x", "version": "1.0.0", "entrypoint": "x:Y", "compatibility": compatibility}, "test"
    )


def test_sysops_range_refusal_names_file_key_and_versions() -> None:
    with pytest.raises(ManifestError) as refused:
        check_sysops(_manifest(sysops=">=0.3"), "/p/x/plugin.yaml", sysops="0.2.1")
    assert refused.value.message == (
        "/p/x/plugin.yaml: key 'compatibility.sysops': plugin x 1.0.0 needs sysops >=0.3, this is 0.2.1"
    )
    assert refused.value.exit_code == ExitCode.INVALID_PLUGIN
    check_sysops(_manifest(sysops=">=0.1,<1.0"), "/p/x/plugin.yaml", sysops="0.2.1")  # fits: no error


def test_prereleases_of_sysops_count() -> None:
    check_sysops(_manifest(sysops=">=0.2"), "plugin.yaml", sysops="0.3.0rc1")


def test_image_python_and_sdk_refused_with_every_line() -> None:
    with pytest.raises(ManifestError) as refused:
        check_image(_manifest(python="<3.0", sdk=">=0.5"), BASE_LABELS, "/p/x")
    message = refused.value.message
    assert message.startswith("/p/x/plugin.yaml: key 'compatibility.python': plugin x 1.0.0 needs Python <3.0, ")
    assert "this is 3.11.2" in message
    assert "key 'compatibility.sdk': plugin x 1.0.0 needs SDK >=0.5, this is 0.1.0" in message
    assert "\n" not in message


def test_image_fits_and_unlabelled_image_is_not_checked() -> None:
    check_image(_manifest(python=">=3.11", sdk=">=0.1"), BASE_LABELS, "/p/x")
    check_image(_manifest(python="<3.0"), {}, "/p/x")  # a base image from before the labels
    check_image(_manifest(python="<3.0"), None, "/p/x")  # labels not readable (Kubernetes)


def test_image_protocol_major_must_match() -> None:
    other_major = f"{int(PROTOCOL_VERSION.split('.')[0]) + 1}.0"
    with pytest.raises(ManifestError, match=f"protocol {other_major}, this sysops speaks {PROTOCOL_VERSION}"):
        check_image(_manifest(), {**BASE_LABELS, LABEL_PROTOCOL: other_major}, "/p/x")
    minor = f"{PROTOCOL_VERSION.split('.')[0]}.99"
    check_image(_manifest(), {**BASE_LABELS, LABEL_PROTOCOL: minor}, "/p/x")


def test_unmet_skips_unknown_versions() -> None:
    assert unmet({"python": "<3.0"}, Platform("0.1.0")) == []
    found = unmet({"python": "<3.0", "sysops": ">=99"}, Platform("0.1.0", python="3.11.2"))
    assert [(u.key, u.needs, u.have) for u in found] == [("sysops", ">=99", "0.1.0"), ("python", "<3.0", "3.11.2")]


def test_verdicts() -> None:
    platform = Platform("0.1.0", python="3.11.2", sdk="0.1.0")
    assert verdict({"sysops": ">=0.1"}, platform, "sysops") == "ok"
    assert verdict({"sysops": ">=0.3"}, platform, "sysops") == "needs >=0.3 (is 0.1.0)"
    assert verdict({"sdk": ">=0.1"}, Platform("0.1.0"), "sdk") == "unknown"


def test_next_versions_are_the_next_minors_and_the_next_sysops_major() -> None:
    platform = Platform("0.1.0", python="3.11.2", sdk="0.1.0")
    assert next_versions(platform) == [("sysops", "0.2"), ("sysops", "1.0"), ("python", "3.12"), ("sdk", "0.2")]
    assert next_versions(Platform("1.4.2")) == [("sysops", "1.5"), ("sysops", "2.0")]


def test_breaks_on_upgrade_names_each_upgrade_that_leaves_the_range() -> None:
    platform = Platform("0.1.0", python="3.11.2", sdk="0.1.0")
    assert breaks_on_upgrade({"sysops": "<0.2", "python": ">=3.11", "sdk": ">=0.1"}, platform) == [
        "sysops 0.2",
        "sysops 1.0",
    ]
    assert breaks_on_upgrade({"sysops": ">=0.1,<1.0", "python": "~=3.11.0", "sdk": "==0.1.*"}, platform) == [
        "sysops 1.0",
        "Python 3.12",
        "SDK 0.2",
    ]
    assert breaks_on_upgrade({"sysops": ">=0.1", "python": ">=3.11"}, platform) == []
    # A range that does not fit now is a "needs", not an upgrade breakage.
    assert breaks_on_upgrade({"sysops": ">=99"}, platform) == []


def test_doctor_row_and_fit() -> None:
    platform = Platform("0.1.0", python="3.11.2", sdk="0.1.0")
    row = doctor_row("pinned", "1.0.0", "running", {"sysops": "<0.2", "python": ">=3.11", "sdk": ">=0.1"}, platform)
    assert row == {
        "name": "pinned",
        "version": "1.0.0",
        "where": "running",
        "sysops": "ok",
        "python": "ok",
        "sdk": "ok",
        "breaks_on_upgrade": ["sysops 0.2", "sysops 1.0"],
    }
    assert row_fits(row)
    misfit = doctor_row("future", "2.0.0", "installed", {"sysops": ">=99", "python": "<3.0", "sdk": ">=0.1"}, platform)
    assert misfit["sysops"] == "needs >=99 (is 0.1.0)" and misfit["python"] == "needs <3.0 (is 3.11.2)"
    assert not row_fits(misfit)


class Quiet(Plugin):
    """A plugin without commands."""

    name = "x"
    version = "1.0.0"

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass


def _up_image(orchestrator: Orchestrator, labels: dict[str, str], **compatibility: Any) -> FakeDriver:
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    driver.add_image("x-image", Quiet)
    driver.label_image("x-image", labels)
    orchestrator.up_image(_manifest(**compatibility), "x-image", "fp-x", "/src/x")
    return driver


def test_orchestrator_refuses_an_image_before_anything_starts_and_removes_it(orchestrator: Orchestrator) -> None:
    with pytest.raises(ManifestError, match=r"plugin x 1\.0\.0 needs Python <3\.0, this is 3\.11\.2"):
        _up_image(orchestrator, BASE_LABELS, python="<3.0")
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    assert driver.started_specs == []
    assert "x-image" not in driver.images
    assert orchestrator.store.plugin("x") is None


def test_orchestrator_refuses_sysops_range_before_anything_starts(orchestrator: Orchestrator) -> None:
    with pytest.raises(ManifestError, match=f"needs sysops >=99, this is {__version__}"):
        _up_image(orchestrator, BASE_LABELS, sysops=">=99")
    driver = orchestrator.driver
    assert isinstance(driver, FakeDriver)
    assert driver.started_specs == [] and "x-image" not in driver.images


def test_orchestrator_starts_a_fitting_image(orchestrator: Orchestrator) -> None:
    driver = _up_image(orchestrator, BASE_LABELS, python=">=3.11")
    assert len(driver.started_specs) == 1
    orchestrator.down("x")


def test_doctor_command_prints_the_matrix_and_exits_4_for_a_misfit(
    control_host: Orchestrator, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    import json

    from sysops.cli import doctor_cmd
    from sysops.cli.main import main

    monkeypatch.delenv("SYSOPS_PLUGIN_PATH", raising=False)
    platform = Platform("0.1.0", python="3.11.2", sdk="0.1.0", protocol=PROTOCOL_VERSION)
    monkeypatch.setattr(doctor_cmd, "base_platform", lambda image: (platform, ""))
    driver = control_host.driver
    assert isinstance(driver, FakeDriver)
    driver.add_image("x-image", Quiet)
    manifest = parse_manifest(
        {"name": "x", "version": "1.0.0", "entrypoint": "x:Y", "compatibility": {"sysops": "<0.2"}}, "test"
    )
    control_host.up_image(manifest, "x-image", "fp-x", "/src/x")

    assert main(["plugin", "doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"sysops 0.1.0; base image {control_host.settings.base_image}: Python 3.11.2, SDK 0.1.0, " + (
        f"protocol {PROTOCOL_VERSION}"
    )
    assert lines[1] == "upgrades checked: sysops 0.2, sysops 1.0, Python 3.12, SDK 0.2"
    assert lines[3].split() == ["NAME", "VERSION", "WHERE", "SYSOPS", "PYTHON", "SDK", "BREAKS_ON_UPGRADE"]
    assert lines[4].split() == ["x", "1.0.0", "running", "ok", "ok", "ok", "sysops", "0.2,", "sysops", "1.0"]

    newer = Platform("0.2.0", python="3.11.2", sdk="0.1.0", protocol=PROTOCOL_VERSION)
    monkeypatch.setattr(doctor_cmd, "base_platform", lambda image: (newer, ""))
    assert main(["plugin", "doctor", "-o", "json"]) == ExitCode.INVALID_PLUGIN
    captured = capsys.readouterr()
    [row] = json.loads(captured.out)["plugins"]
    assert row["sysops"] == "needs <0.2 (is 0.2.0)" and row["breaks_on_upgrade"] == []
    assert "1 installed plugin(s) do not fit" in captured.err
    control_host.down("x")
