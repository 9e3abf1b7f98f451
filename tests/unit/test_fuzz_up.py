"""Property-based fuzzing of `sysops plugin up` of hostile plugin directories, in process, over a fake driver.

The CLI runs as a user runs it (`sysops.cli.main.main`), with the engine replaced by a fake driver that
records what it is asked to do. Property: exit code 4 (the documented code for a bad plugin), one
`error:` line and no traceback on stderr; nothing left behind: no new file or directory in SYSOPS_HOME
but sysops's bookkeeping (tests/fuzz_properties.py), nothing in the temporary directory; and a manifest
that does not load never reaches the driver (no build, no container).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from hypothesis import event, given
from hypothesis import strategies as st
from sysops.cli.main import main
from sysops.core.manifest import MANIFEST_FILE, load_manifest
from sysops.errors import ExitCode, SysopsError
from sysops.runtime.base import BuildRequest, BuiltImage, InstanceSpec, InstanceStatus, ProgressCallback
from sysops.runtime.fake import FakeDriver
from sysops.settings import Settings

from tests.fuzz_properties import assert_clean_error, assert_exit_code, assert_nothing_left, files_under, fuzz_settings
from tests.unit.conftest import in_process_host
from tests.unit.test_fuzz_cli import Fuzzed
from tests.unit.test_fuzz_manifest import KEYS, VALID, YAML_TOKENS, trees

PLUGIN_CODE = "from sysops_sdk import Plugin\n\n\nclass Demo(Plugin):\n    name = 'demo'\n    version = '1.2.3'\n"
BOMB = (
    b"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
)


@dataclass
class RecordingDriver(FakeDriver):
    """A fake driver that remembers every build and container start it was asked for."""

    calls: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def build_image(self, request: BuildRequest, progress: ProgressCallback) -> BuiltImage:
        """Record the build, then fail it as the fake driver does for an unknown tag."""
        self.calls.append(f"build {request.tag}")
        return super().build_image(request, progress)

    def start(self, spec: InstanceSpec) -> InstanceStatus:
        """Record the start."""
        self.calls.append(f"start {spec.name}")
        return super().start(spec)


def _dump(change: dict[str, object]) -> bytes:
    return yaml.safe_dump({**VALID, **change}, allow_unicode=True).encode("utf-8", "surrogatepass")


def _tokens(tokens: list[str]) -> bytes:
    return ("name: demo\nversion: 1.2.3\nentrypoint: demo.plugin:Demo\n" + "".join(tokens)).encode(
        "utf-8", "surrogatepass"
    )


manifests = (
    st.dictionaries(st.sampled_from(KEYS), trees, max_size=4).map(_dump)
    | st.lists(st.sampled_from(YAML_TOKENS) | st.text(max_size=5), max_size=40).map(_tokens)
    | st.binary(max_size=200)
    | st.sampled_from(
        [
            _dump({}),  # valid: built (the fake build fails), its build context removed
            BOMB,
            "name: demo\n".encode("utf-16"),
            b"\xff\xfe\x00binary",
            b"x: " + b"[" * 3000,
            _dump({"entrypoint": "a" * 1000 + ":B"}),
            _dump({"limits": {"cpu_percent": True}}),
            _dump({"limits": {"disk_io_mb_per_sec": float("inf")}}),
            _dump({"network": [{"host": "0x7f.1"}]}),
            b"name: demo\nname: demo\nversion: 1.2.3\nentrypoint: demo.plugin:Demo\n",
        ]
    )
)


@dataclass
class Up:
    """A state directory, a temporary directory and a plugin directory for `plugin up` over a fake engine."""

    home: Path
    temp: Path
    plugin: Path
    driver: RecordingDriver


@pytest.fixture
def up(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Up]:
    driver = RecordingDriver()
    driver.add_image(Settings().base_image, Fuzzed)
    monkeypatch.setattr("sysops.runtime.docker.driver.DockerDriver", lambda: driver)
    monkeypatch.setenv("SYSOPS_CONFIG", str(tmp_path / "no-config.yaml"))  # local: no server context
    for variable in ("SYSOPS_SERVER", "SYSOPS_TOKEN", "SYSOPS_CONTEXT"):
        monkeypatch.delenv(variable, raising=False)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    plugin = tmp_path / "plugin"
    (plugin / "demo").mkdir(parents=True)
    (plugin / "demo" / "__init__.py").write_text("")
    (plugin / "demo" / "plugin.py").write_text(PLUGIN_CODE)
    with in_process_host(Settings(), driver):
        yield Up(home, temp, plugin, driver)


def _run(argv: list[str]) -> tuple[int, str]:
    stderr = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace", write_through=True)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        code = main(argv)
    buffer = stderr.buffer
    assert isinstance(buffer, io.BytesIO)
    return code, buffer.getvalue().decode("utf-8")


def _loads(plugin: Path) -> bool:
    try:
        load_manifest(plugin)
    except SysopsError:
        return False
    return True


@fuzz_settings(100)
@given(content=manifests)
def test_plugin_up_of_hostile_manifests(up: Up, content: bytes) -> None:
    (up.plugin / MANIFEST_FILE).write_bytes(content)
    before = files_under(up.home)
    up.driver.calls.clear()
    code, stderr = _run(["plugin", "up", str(up.plugin)])
    loads = _loads(up.plugin)
    event(f"exit {code}, manifest {'loads' if loads else 'refused'}")
    assert_exit_code(code, {ExitCode.INVALID_PLUGIN})
    assert_clean_error(stderr, only_line=not loads)  # a manifest that loads gets progress lines first
    assert_nothing_left(up.home, before, up.temp)
    assert not [call for call in up.driver.calls if call.startswith("start")], up.driver.calls
    assert loads or up.driver.calls == [], f"a refused manifest reached the driver: {up.driver.calls}"
