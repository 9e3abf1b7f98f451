"""A real OCI registry on loopback for tests that push, pull and sign images.

Tests about distribution must exercise a real registry (manifests, digests, tags that move), not a fake.
This starts Debian's `docker-registry` (CNCF distribution 2.8) on 127.0.0.1 at a free port, with
filesystem storage in a temporary directory and deletes enabled, waits until `/v2/` answers, and stops
it and removes its storage when the session ends. Docker treats 127.0.0.0/8 as an insecure-allowed
registry, so the engine pushes to and pulls from it over plain HTTP without configuration.

Use it from a conftest.py (or a test module) that needs it:

    from tests.registry_fixture import LoopbackRegistry
    from tests.registry_fixture import registry_fixture  # noqa: F401  (defines the fixture `registry`)

    def test_x(registry: LoopbackRegistry) -> None:
        ref = f"{registry.host}/sysops-plugins/demo:1.0"
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REGISTRY_BINARY = "/usr/bin/docker-registry"
STARTUP_SECONDS = 20.0

CONFIG_TEMPLATE = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
"""


@dataclass(frozen=True)
class LoopbackRegistry:
    """A running registry: `host` is `127.0.0.1:PORT` (the prefix of image refs), `url` its HTTP base."""

    host: str
    url: str
    storage: Path
    process: subprocess.Popen[bytes]

    def manifest_digest(self, repository: str, reference: str) -> str:
        """The digest the registry serves for `repository:reference` (tag or digest), from its API."""
        request = urllib.request.Request(
            f"{self.url}/v2/{repository}/manifests/{reference}",
            method="HEAD",
            headers={
                "Accept": ", ".join(
                    [
                        "application/vnd.docker.distribution.manifest.v2+json",
                        "application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.list.v2+json",
                        "application/vnd.oci.image.index.v1+json",
                    ]
                )
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.headers["Docker-Content-Digest"])


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited ({process.returncode}): {log.read_text(errors='replace')}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(f"{url}/v2/", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.1)
    output = log.read_text(errors="replace")
    raise RuntimeError(f"docker-registry did not answer {url}/v2/ in {STARTUP_SECONDS:.0f}s: {output}")


@contextlib.contextmanager
def running_registry() -> Iterator[LoopbackRegistry]:
    """Start a registry on a free loopback port; stop it and remove its storage on exit."""
    workdir = Path(tempfile.mkdtemp(prefix="sysops-registry-"))
    storage = workdir / "storage"
    storage.mkdir()
    port = free_loopback_port()
    config = workdir / "config.yml"
    config.write_text(CONFIG_TEMPLATE.format(storage=storage, port=port))
    log = workdir / "registry.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process, log)
        yield LoopbackRegistry(host=f"127.0.0.1:{port}", url=url, storage=storage, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session", name="registry")
def registry_fixture() -> Iterator[LoopbackRegistry]:
    """One loopback registry for the test session, the fixture `registry` (see the module docstring)."""
    with running_registry() as running:
        yield running


registry = registry_fixture  # `from tests.registry_fixture import registry` (noqa F401, F811) works too
