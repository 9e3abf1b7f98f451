"""Plugin indexes end to end: an index written with `sysops index publish` (python-tuf's Metadata API), served
by a loopback HTTP server this module starts, read through python-tuf's ngclient by `index add`, `plugin
search` and `find` — and every refusal TUF gives: expired metadata (a freeze), a rolled-back timestamp,
snapshot or targets, a private index without its token. No engine and no network beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sysops.distribution.index_client import find, versions
from sysops.distribution.index_writer import Expiry, IndexRepository
from tuf.api.metadata import MetaFile  # type: ignore[attr-defined]

from tests.integration.conftest import Sysops

DIGEST = "sha256:" + "ab" * 32
INDEX = {
    "format": 1,
    "plugins": [
        {
            "name": "hello",
            "description": "Says hello",
            "versions": [
                {"version": "1.0.0", "spec": "hello-plugin==1.0.0", "image_digest": DIGEST},
                {"version": "1.1.0", "spec": "hello-plugin==1.1.0", "compatibility": {"sysops": ">=0.1"}},
                {"version": "2.0.0a1", "spec": "hello-plugin==2.0.0a1", "stage": "experimental"},
                {"version": "3.0.0", "spec": "hello-plugin==3.0.0", "compatibility": {"sysops": ">=99"}},
            ],
        },
        {
            "name": "disk-report",
            "description": "Disk usage per volume",
            "versions": [{"version": "0.2.0", "spec": "registry.local:5000/plugins/disk@sha256:" + "cd" * 32}],
        },
    ],
}


class _IndexHandler(SimpleHTTPRequestHandler):
    """Serves the repository directory; answers 401 without the expected bearer token, when one is set."""

    server: _IndexServer

    def do_GET(self) -> None:
        authorization = self.headers.get("Authorization")
        self.server.authorizations.append(authorization)
        if self.server.token and authorization != f"Bearer {self.server.token}":
            self.send_error(401)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _IndexServer(ThreadingHTTPServer):
    token = ""
    authorizations: list[str | None]


@contextlib.contextmanager
def serving(directory: Path, token: str = "") -> Iterator[tuple[str, _IndexServer]]:
    """An HTTP server on 127.0.0.1 serving `directory`, stopped and closed when the block ends."""
    server = _IndexServer(("127.0.0.1", 0), functools.partial(_IndexHandler, directory=str(directory)))
    server.token = token
    server.authorizations = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.fixture
def cli(tmp_path: Path) -> Sysops:
    home = tmp_path / "home"
    env = {**os.environ, "SYSOPS_HOME": str(home)}
    env.pop("SYSOPS_DEBUG", None)
    return Sysops(home=home, env=env)


@pytest.fixture
def index_dir(tmp_path: Path, cli: Sysops) -> Path:
    """An index directory published with the CLI, as an author does."""
    directory = tmp_path / "index"
    directory.mkdir()
    (directory / "index.json").write_text(json.dumps(INDEX))
    out = cli.ok("index", "publish", str(directory), timeout=60)
    assert "created keys" in out and "targets version 2" in out
    return directory


def _add(cli: Sysops, url: str, index_dir: Path, *extra: str) -> str:
    root = IndexRepository(index_dir).root_file
    return cli.ok("index", "add", "main", url, "--root", str(root), "--tier", "community", *extra, timeout=60)


def _one_line_refusal(cli: Sysops, *args: str) -> str:
    result = cli.run(*args, timeout=60)
    assert result.returncode == 9, (result.returncode, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: index 'main' (http://127.0.0.1:")
    return result.stderr


def test_add_ls_search_find_remove(cli: Sysops, index_dir: Path) -> None:
    assert oct((index_dir / "keys").stat().st_mode & 0o777) == "0o700"
    assert all(oct(key.stat().st_mode & 0o777) == "0o600" for key in (index_dir / "keys").iterdir())
    with serving(index_dir / "repository") as (url, server):
        assert "index main added: 2 plugin(s), tier community" in _add(cli, url, index_dir)
        listed = json.loads(cli.ok("index", "ls", "-o", "json"))
        assert listed == [{"name": "main", "url": url, "tier": "community", "token_file": ""}]
        assert oct((cli.home / "indexes.json").stat().st_mode & 0o777) == "0o600"

        found = json.loads(cli.ok("plugin", "search", "HELLO", "-o", "json", timeout=60))
        assert [(row["name"], row["version"], row["tier"]) for row in found] == [("hello", "3.0.0", "community")]
        assert [row["name"] for row in json.loads(cli.ok("plugin", "search", "disk usage", "-o", "json"))] == [
            "disk-report"
        ]
        assert "no plugin matches 'nothing'" in cli.ok("plugin", "search", "nothing")
        table = cli.ok("plugin", "search", "e")
        assert table.splitlines()[0].split() == ["NAME", "VERSION", "INDEX", "TIER", "STAGE", "DESCRIPTION"]

        entry = find(cli.home, "hello", "")  # 3.0.0 needs a sysops >=99, 2.0.0a1 is experimental
        assert entry is not None and (entry.version, entry.spec) == ("1.1.0", "hello-plugin==1.1.0")
        assert entry.index == "main"
        pinned = find(cli.home, "hello", "<1.1")
        assert pinned is not None and (pinned.version, pinned.image_digest) == ("1.0.0", DIGEST)
        experimental = find(cli.home, "hello", ">=2.0.0a1", include_experimental=True)
        assert experimental is not None and experimental.stage == "experimental"
        assert find(cli.home, "hello", ">=2.0.0a1") is None
        disk = find(cli.home, "disk-report")
        assert disk is not None and disk.is_oci
        assert find(cli.home, "nowhere") is None
        assert [entry.version for entry in versions(cli.home, "hello")] == ["1.0.0", "1.1.0", "2.0.0a1", "3.0.0"]
        assert set(server.authorizations) == {None}  # a public index never gets a token

    duplicate = cli.run("index", "add", "main", url, "--root", str(index_dir / "index.json"), "--tier", "community")
    assert duplicate.returncode == 2 and "already configured" in duplicate.stderr
    assert "index main removed" in cli.ok("index", "remove", "main")
    assert not (cli.home / "indexes" / "main").exists()
    assert "no indexes" in cli.ok("index", "ls")
    assert "no indexes; `sysops index add" in cli.ok("plugin", "search", "hello")
    missing = cli.run("index", "remove", "main")
    assert (missing.returncode, missing.stderr) == (8, "error: no index named 'main'; `sysops index ls` lists them\n")


def test_expired_metadata_is_refused(cli: Sysops, index_dir: Path) -> None:
    repository = IndexRepository(index_dir)
    with serving(index_dir / "repository") as (url, _server):
        _add(cli, url, index_dir)
        # a freeze: the index (or a mirror) keeps serving metadata signed two days ago, valid for one day
        two_days_ago = datetime.now(UTC) - timedelta(days=2)
        repository.publish(repository.read_source(), expiry=Expiry(snapshot=timedelta(days=1)), now=two_days_ago)
        line = _one_line_refusal(cli, "plugin", "search", "hello")
        assert "its metadata expired (timestamp.json is expired)" in line
        # renewing the timestamp alone (what a periodic job does) is not enough when the snapshot expired too
        assert "timestamp renewed" in cli.ok("index", "publish", str(index_dir), "--timestamp-only")
        expired_snapshot = _one_line_refusal(cli, "plugin", "search", "hello")
        assert "snapshot.json is expired" in expired_snapshot
        cli.ok("index", "publish", str(index_dir))
        assert "hello" in cli.ok("plugin", "search", "hello")


def test_an_expired_or_wrong_root_at_add_is_refused(cli: Sysops, tmp_path: Path) -> None:
    directory = tmp_path / "stale"
    directory.mkdir()
    (directory / "index.json").write_text(json.dumps(INDEX))
    repository = IndexRepository.create(directory, expiry=Expiry(root=timedelta(seconds=-1)))
    repository.publish(repository.read_source())
    with serving(directory / "repository") as (url, _server):
        result = cli.run("index", "add", "main", url, "--root", str(repository.root_file), "--tier", "official")
        not_root = cli.run("index", "add", "main", url, "--root", str(directory / "index.json"), "--tier", "official")
    assert result.returncode == 9 and "root.json is expired" in result.stderr, result.stderr
    assert not_root.returncode == 2 and "index.json is not TUF root metadata" in not_root.stderr, not_root.stderr
    assert "no indexes" in cli.ok("index", "ls") and not (cli.home / "indexes" / "main").exists()


def test_rolled_back_metadata_is_refused(cli: Sysops, index_dir: Path, tmp_path: Path) -> None:
    repository = IndexRepository(index_dir)
    served = index_dir / "repository"
    with serving(served) as (url, _server):
        _add(cli, url, index_dir)
        old_state = tmp_path / "old-repository"
        shutil.copytree(served, old_state)
        repository.publish(repository.read_source())
        cli.ok("plugin", "search", "hello")  # the client now trusts timestamp, snapshot and targets v3

        # a mirror replays the whole older repository: the timestamp goes back from 3 to 2
        newer_state = tmp_path / "new-repository"
        served.rename(newer_state)
        shutil.copytree(old_state, served)
        line = _one_line_refusal(cli, "plugin", "search", "hello")
        assert "rolled back to an older version" in line and "timestamp" in line
        shutil.rmtree(served)
        newer_state.rename(served)
        cli.ok("plugin", "search", "hello")

        # a timestamp signed with the right key that points at an older snapshot
        timestamp = repository.load("timestamp")
        timestamp.signed.snapshot_meta = MetaFile(version=timestamp.signed.snapshot_meta.version - 1)
        timestamp.signed.version += 1
        repository.write(timestamp)
        line = _one_line_refusal(cli, "plugin", "search", "hello")
        assert "rolled back to an older version" in line and "snapshot" in line

        # a snapshot (newer, properly signed and timestamped) that points at an older targets
        snapshot = repository.load("snapshot")
        snapshot.signed.meta["targets.json"] = MetaFile(version=snapshot.signed.meta["targets.json"].version - 1)
        snapshot.signed.version += 2
        repository.write(snapshot)
        repository.resign_timestamp()
        line = _one_line_refusal(cli, "plugin", "search", "hello")
        assert "rolled back to an older version" in line and "targets.json" in line


def test_tampered_index_document_is_refused(cli: Sysops, index_dir: Path) -> None:
    with serving(index_dir / "repository") as (url, _server):
        _add(cli, url, index_dir)
        for served in (index_dir / "repository" / "targets").glob("*.index.json"):
            served.write_text(json.dumps({**INDEX, "plugins": INDEX["plugins"][:1]}))
        shutil.rmtree(cli.home / "indexes" / "main" / "targets")  # no cached copy to fall back on
        line = _one_line_refusal(cli, "plugin", "search", "hello")
        assert "does not match its signed length or hash" in line


def test_private_index_needs_its_token(cli: Sysops, index_dir: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    with serving(index_dir / "repository", token="s3cret-token") as (url, server):
        refused = cli.run("index", "add", "main", url, "--root", str(IndexRepository(index_dir).root_file),
                          "--tier", "private", timeout=60)  # fmt: skip
        assert refused.returncode == 5, refused.stderr
        assert refused.stderr.count("\n") == 1 and "refused access (HTTP 401)" in refused.stderr
        assert "no indexes" in cli.ok("index", "ls")

        token_file.chmod(0o644)
        readable = cli.run("index", "add", "main", url, "--root", str(IndexRepository(index_dir).root_file),
                           "--tier", "private", "--token-file", str(token_file))  # fmt: skip
        assert readable.returncode == 2 and "readable by others" in readable.stderr

        token_file.chmod(0o600)
        server.authorizations.clear()
        _add(cli, url, index_dir, "--token-file", str(token_file))
        assert "hello" in cli.ok("plugin", "search", "hello")
        assert server.authorizations and set(server.authorizations) == {"Bearer s3cret-token"}
        assert "s3cret" not in (cli.home / "indexes.json").read_text()

        token_file.write_text("wrong\n")
        line = cli.run("plugin", "search", "hello", timeout=60)
        assert line.returncode == 5 and "index 'main'" in line.stderr and "HTTP 401" in line.stderr


def test_publish_lists_a_plugin_from_its_directory(cli: Sysops, tmp_path: Path) -> None:
    directory = tmp_path / "authored"
    plugin = Path(__file__).resolve().parents[2] / "examples" / "hello"
    added = cli.ok("index", "publish", str(directory), "--add", str(plugin), "--spec", "hello-plugin==0.1.0",
                   "--image-digest", DIGEST)  # fmt: skip
    assert "created keys" in added
    listed = json.loads((directory / "index.json").read_text())["plugins"]
    manifest_name, manifest_version = listed[0]["name"], listed[0]["versions"][0]["version"]
    again = cli.run("index", "publish", str(directory), "--add", str(plugin), "--spec", "hello-plugin==0.1.0")
    assert again.returncode == 2 and f"{manifest_name} {manifest_version} is already listed" in again.stderr
    without_spec = cli.run("index", "publish", str(directory), "--add", str(plugin))
    assert without_spec.returncode == 2 and "--add needs --spec" in without_spec.stderr
    with serving(directory / "repository") as (url, _server):
        _add(cli, url, directory)
        entry = find(cli.home, manifest_name)
    assert entry is not None and (entry.version, entry.image_digest) == (manifest_version, DIGEST)
    assert entry.compatibility["sysops"] and entry.spec == "hello-plugin==0.1.0"
