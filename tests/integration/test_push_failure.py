"""A push the engine cannot complete (the registry does not answer) is an engine operation that failed: exit 6
(RuntimeOperationError), as for a pull, not exit 4, which says the plugin or its build is wrong.

Real Docker engine: the base image is tagged for a registry on a closed loopback port, pushed, and the tag
removed again.
"""

from __future__ import annotations

import socket
import uuid

import docker
import pytest
from sysops.errors import ExitCode, SysopsError
from sysops.runtime.docker.driver import DockerDriver

BASE_IMAGE = "sysops/plugin-base:0.1.0"


def _closed_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return int(listener.getsockname()[1])


def test_a_push_to_a_registry_that_does_not_answer_is_exit_6() -> None:
    client = docker.from_env()
    reference = f"127.0.0.1:{_closed_port()}/sysops-test-push-{uuid.uuid4().hex[:8]}:x"
    client.images.get(BASE_IMAGE).tag(reference)
    try:
        with pytest.raises(SysopsError) as caught:
            DockerDriver().push_image(reference)
        assert caught.value.exit_code == ExitCode.START_FAILED
        assert str(caught.value).startswith(f"pushing {reference} failed: ")
    finally:
        client.images.remove(reference)
        client.close()
