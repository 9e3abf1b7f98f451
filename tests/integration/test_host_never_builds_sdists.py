"""Fetching a plugin's requirements never runs a package's build code on the host (hostile review, HIGH).

`prepare_wheels` runs real pip as the host user: an sdist's build backend (its setup.py) would run there.
Each sdist here has an in-tree PEP 517 backend (no build requirements, so it builds even without an index
for setuptools) that writes a marker file the moment pip imports it. The index is a loopback PEP 503 one
started by the test; pip's own configuration is switched off, so nothing else is reached.
"""

from __future__ import annotations

import functools
import http.server
import os
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sysops.errors import BuildError
from sysops.imaging import image

from tests.integration.test_install_sources import QuietHandler


def write_marking_sdist(archive: Path, marker: Path) -> Path:
    """`evil-1.0.tar.gz` whose build backend writes `marker` when pip imports it."""
    source = archive.parent / "evil-1.0"
    source.mkdir(parents=True)
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
        '[project]\nname = "evil"\nversion = "1.0"\n'
    )
    (source / "backend.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('built')\n")
    (source / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=source.name)
    return archive


@pytest.fixture
def pip_sees_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare_wheels's pip with no configured index, find-links or build option of the host's."""
    for key in [key for key in os.environ if key.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


@pytest.fixture
def sdist_index(tmp_path: Path, pip_sees_only: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A loopback index serving only `evil` 1.0 as an sdist; yields the marker its build would write."""
    marker = tmp_path / "built-on-host"
    project = tmp_path / "index" / "simple" / "evil"
    project.mkdir(parents=True)
    write_marking_sdist(project / "evil-1.0.tar.gz", marker)
    (project / "index.html").write_text('<html><body><a href="evil-1.0.tar.gz">evil-1.0.tar.gz</a></body></html>\n')
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(tmp_path / "index"))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.server_address[1]}/simple/")
    try:
        yield marker
    finally:
        server.shutdown()
        server.server_close()


def test_an_sdist_only_requirement_is_refused_naming_it_and_its_build_never_runs(
    sdist_index: Path, tmp_path: Path
) -> None:
    with pytest.raises(BuildError) as caught:
        image.prepare_wheels(["evil==1.0"], tmp_path / "cache")
    assert not sdist_index.exists(), "the sdist's build backend ran on the host"
    message = str(caught.value)
    assert "no wheel of evil==1.0" in message and "vendor" in message and "\n" not in message


def test_an_archive_in_the_callers_directory_is_not_built(
    pip_sees_only: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip reads `evil-1.0.tar.gz` as a file relative to its working directory: it is an empty private one."""
    marker = tmp_path / "built-on-host"
    caller = tmp_path / "caller"
    caller.mkdir()
    write_marking_sdist(caller / "evil-1.0.tar.gz", marker)
    monkeypatch.chdir(caller)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")  # nothing listens: loopback only
    with pytest.raises(BuildError):
        image.prepare_wheels(["evil-1.0.tar.gz"], tmp_path / "cache")  # what the parser would refuse first
    assert not marker.exists(), "the archive in the caller's directory was built on the host"
