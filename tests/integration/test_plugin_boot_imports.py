"""In the real base image, a plugin process defers asyncio until it is used (sdk/_deferred_imports.py): the
probe of tests/unit/test_sdk_deferred_imports.py run by the image's own Python and installed SDK, as a plugin
container runs them (read-only, no network, SYSOPS_ENTRYPOINT set)."""

from __future__ import annotations

import json
import os
import uuid

import docker

from tests.unit.test_sdk_deferred_imports import PROBE


def test_the_base_image_boots_a_plugin_without_asyncio_and_gives_it_on_use(engine: docker.DockerClient) -> None:
    image = os.environ.get("SYSOPS_BASE_IMAGE", "sysops/plugin-base:0.1.0")
    output = engine.containers.run(
        image,
        ["-c", PROBE],
        entrypoint="/opt/sysops/bin/python",
        environment={"SYSOPS_ENTRYPOINT": "plugin.module:Plugin"},
        labels={f"sysops-test-boot-{uuid.uuid4().hex[:8]}": "1"},
        network_mode="none",
        read_only=True,
        remove=True,
    )
    report = json.loads(output)
    assert report["asyncio_at_boot"] is False and report["ssl_at_boot"] is False
    assert report["results"] == list(range(8)) and report["errors"] == []
    assert report["one_cancelled_error"] is True and report["module_type"] == "module"
    assert report["aio_channel"] is True and report["aio_health"] is True
