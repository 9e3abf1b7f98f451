"""One harness per runtime driver, so the contract tests run the same cases against each.

A `Harness` gives a test what a core would have: a driver, an image of a small plugin that driver can
start, and a spec factory that fills an `InstanceSpec` as rollout does (labels of a private installation,
a private socket directory, limits). Fake: the plugin class registered as an image. Docker: the same
plugin built on the base image with the orchestrator's own build path, on the real engine. Kubernetes:
that image started as pods in a namespace of their own on the test cluster (skipped, with the reason,
when there is none). Everything a harness creates is removed when its module ends.
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sysops.core.client import PluginClient
from sysops.core.manifest import Manifest
from sysops.imaging.image import make_context
from sysops.private_paths import ensure_private_dir
from sysops.runtime.base import (
    LABEL_INSTALLATION,
    LABEL_INSTANCE,
    LABEL_PLUGIN,
    LABEL_REVISION,
    LABEL_VERSION,
    BuildRequest,
    InstanceSpec,
    InstanceStatus,
    ResourceLimits,
    RuntimeDriver,
    plugin_uid,
)
from sysops.runtime.fake import FakeDriver
from sysops.runtime.kubernetes.pod_tokens import KEY_FILE_ENV
from sysops.runtime.socket_dirs import remove_socket_dir
from sysops.settings import Settings
from sysops_sdk import Plugin, plugin_command

PLUGIN = "contract-echo"
VERSION = "1.0.0"
BROKEN_REASON = "contract: database unreachable"
LIMITS = ResourceLimits(nano_cpus=500_000_000, memory_bytes=128 * 1024 * 1024, pids=64, data_bytes=16 * 1024 * 1024)


class EchoPlugin(Plugin):
    """The test plugin: the fake driver's image, and the source of the engines' image."""

    name = PLUGIN
    version = VERSION

    def initialize(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @plugin_command("echo")
    def echo(self) -> str:
        return "echo"


class BrokenPlugin(EchoPlugin):
    """The test plugin with an initialize() that fails."""

    def initialize(self) -> None:
        raise RuntimeError(BROKEN_REASON)


#: The engines' image runs the very classes the fake runs: their source, as the plugin package's module.
PLUGIN_SOURCE = "\n\n".join(
    [
        "from sysops_sdk import Plugin, plugin_command",
        f"PLUGIN, VERSION, BROKEN_REASON = {PLUGIN!r}, {VERSION!r}, {BROKEN_REASON!r}",
        inspect.getsource(EchoPlugin),
        inspect.getsource(BrokenPlugin),
    ]
)


@dataclass
class Harness:
    """A driver with an image it can start, and the specs a core would give it."""

    driver: RuntimeDriver
    image: str
    #: An image of the plugin whose initialize() fails.
    broken_image: str
    settings: Settings
    #: Seconds an instance may take from `start` to answering health (pods are scheduled, containers are not).
    ready_s: float = 20.0
    handles: list[str] = field(default_factory=list)
    socket_dirs: list[Path] = field(default_factory=list)
    #: Every installation label a spec carried (tests start instances of "another installation" too).
    installations: set[str] = field(default_factory=set)

    @property
    def installation(self) -> str:
        return self.settings.installation_id

    def spec(
        self, *, installation: str | None = None, extra_labels: dict[str, str] | None = None, image: str = ""
    ) -> InstanceSpec:
        """A spec as rollout builds one (its own instance id and socket directory)."""
        instance = uuid.uuid4().hex[:10]
        owner = installation or self.installation
        self.installations.add(owner)
        socket_dir = ensure_private_dir(self.settings.ensure_run_dir() / instance)
        self.socket_dirs.append(socket_dir)
        labels = {
            LABEL_INSTALLATION: owner,
            LABEL_PLUGIN: PLUGIN,
            LABEL_VERSION: VERSION,
            LABEL_REVISION: "1",
            LABEL_INSTANCE: instance,
            **(extra_labels or {}),
        }
        return InstanceSpec(
            name=f"sysops-{owner}-{PLUGIN}-{instance}",
            image=image or self.image,
            labels=labels,
            environment={"SYSOPS_LISTEN": "unix:///run/sysops/plugin.sock", "SYSOPS_INSTANCE": instance},
            socket_dir=socket_dir,
            data_volume=f"sysops-{owner}-{PLUGIN}-data",
            limits=LIMITS,
            token=uuid.uuid4().hex,
            uid=plugin_uid(owner, PLUGIN),
            data_dir=self.settings.home.resolve() / "data" / PLUGIN,
        )

    def start(self, spec: InstanceSpec | None = None) -> tuple[InstanceSpec, InstanceStatus]:
        """Start an instance (removed at the end of the test by `started`)."""
        spec = spec or self.spec()
        status = self.driver.start(spec)
        self.handles.append(status.handle)
        return spec, status

    def endpoint(self, spec: InstanceSpec, status: InstanceStatus) -> str:
        """Where the core would call the instance: the driver's endpoint, else the socket in its directory."""
        return status.endpoint or f"unix://{spec.socket_dir}/plugin.sock"

    @staticmethod
    def token(spec: InstanceSpec, status: InstanceStatus) -> str:
        """The instance's token, as the rollout records it: the driver's own when it makes one (Kubernetes derives
        each pod's token from its name), else the spec's."""
        return status.token or spec.token

    def wait_serving(self, spec: InstanceSpec, handle: str) -> InstanceStatus:
        """Wait until the instance answers health with SERVING; return its status then."""
        deadline = time.monotonic() + self.ready_s
        answer = "not started"
        while time.monotonic() < deadline:
            status = self.driver.inspect(handle)
            assert status is not None, f"instance {handle} vanished while starting"
            with PluginClient(self.endpoint(spec, status), PLUGIN, self.token(spec, status)) as client:
                answer = client.health(timeout=1.0)
            if answer == "SERVING":
                return status
            time.sleep(0.2)
        raise AssertionError(f"{self.driver.name}: instance {handle} did not serve within {self.ready_s}s ({answer})")

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.ready_s)
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.2)
        raise AssertionError(f"{self.driver.name}: timed out waiting for {what}")

    def remove_started(self) -> None:
        for handle in self.handles:
            self.driver.remove(handle)
        self.handles.clear()
        for socket_dir in self.socket_dirs:
            remove_socket_dir(socket_dir)
        self.socket_dirs.clear()

    def remove_everything(self) -> None:
        """Remove what carries any installation label the harness used (instances; on Docker images and
        volumes too), and the harness's directories."""
        self.remove_started()
        for installation in self.installations:
            self.driver.remove_labelled({LABEL_INSTALLATION: installation})
        shutil.rmtree(self.settings.home, ignore_errors=True)
        shutil.rmtree(self.settings.run_dir, ignore_errors=True)


def known_difference(request: pytest.FixtureRequest, rig: Harness, driver: str, reason: str) -> None:
    """Mark the running case as one `driver` fails on purpose: strict, so the mark must go once it passes."""
    if rig.driver.name == driver:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


def _settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("contract") / "home"
    return Settings(home=home)


def _build_images(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[RuntimeDriver, str, str]:
    """Build the test plugin's images on the local engine as `plugin up` does: the driver, the working image's
    id and the broken one's."""
    from sysops.runtime.factory import docker_driver

    driver = docker_driver()
    try:
        driver.ping()
    except Exception as exc:
        pytest.fail(f"the contract tests need a Docker engine ({exc}); run scripts/bootstrap.sh")
    base = driver.image_id(settings.base_image)
    if base is None:
        pytest.fail(f"base image {settings.base_image} is missing; run plugin-base-image/build.sh")
    plugin_dir = tmp_path_factory.mktemp("plugin")
    (plugin_dir / "contract_plugin").mkdir()
    (plugin_dir / "contract_plugin" / "__init__.py").write_text("")
    (plugin_dir / "contract_plugin" / "plugin.py").write_text(PLUGIN_SOURCE)
    labels = {LABEL_INSTALLATION: settings.installation_id, LABEL_PLUGIN: PLUGIN}
    images = []
    for plugin_class in ("EchoPlugin", "BrokenPlugin"):
        entrypoint = f"contract_plugin.plugin:{plugin_class}"
        manifest = Manifest.model_validate({"name": PLUGIN, "version": VERSION, "entrypoint": entrypoint})
        tag = f"sysops-contract/{PLUGIN}:{settings.installation_id}-{plugin_class.lower()}"
        with make_context(plugin_dir, manifest, base, settings.cache_dir, labels) as context:
            images.append(driver.build_image(BuildRequest(context=context.tar_path, tag=tag), lambda _: None).id)
    return driver, images[0], images[1]


def _remove_images(settings: Settings) -> None:
    """Remove the images `_build_images` built (they carry the harness's installation label)."""
    from sysops.runtime.factory import docker_driver

    docker_driver().remove_labelled({LABEL_INSTALLATION: settings.installation_id})


#: The chart's CustomResourceDefinitions (the Plugin kind) and the Plugin CRD's name.
CHART_CRDS = Path(__file__).resolve().parents[2] / "charts" / "sysops" / "crds"
PLUGIN_CRD = "plugins.sysops.dev"


def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=120, check=False)


def _kubernetes_harness(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    if not os.environ.get("KUBECONFIG") or not shutil.which("kubectl"):
        pytest.skip('no Kubernetes cluster: set KUBECONFIG and put kubectl on PATH (eval "$(../shared/k8s/up.sh)")')
    from sysops.runtime.kubernetes.driver import KubernetesDriver

    _, image, broken = _build_images(settings, tmp_path_factory)  # the kubelet runs images of the same engine
    namespace = f"sysops-contract-{uuid.uuid4().hex[:6]}"
    created = kubectl("create", "namespace", namespace)
    assert created.returncode == 0, created.stderr
    # What the chart gives its server: the Plugin CRD (pods are owned by Plugin objects) and the key that plugin pod
    # tokens are derived from. The CRD stays only if it was there before (helm, too, never deletes a CRD).
    crd_was_there = kubectl("get", "crd", PLUGIN_CRD).returncode == 0
    applied = kubectl("apply", "-f", str(CHART_CRDS))
    assert applied.returncode == 0, applied.stderr
    key_file = tmp_path_factory.mktemp("token-key") / "token-key"
    key_file.write_bytes(os.urandom(32))
    saved_key = os.environ.get(KEY_FILE_ENV)
    os.environ[KEY_FILE_ENV] = str(key_file)
    driver = KubernetesDriver(namespace=namespace, image_pull_policy="Never")
    harness = Harness(driver, image, broken, settings, ready_s=90)
    try:
        yield harness
    finally:
        harness.remove_everything()
        kubectl("delete", "namespace", namespace, "--wait=false")
        _remove_images(settings)
        if saved_key is None:
            os.environ.pop(KEY_FILE_ENV, None)
        else:
            os.environ[KEY_FILE_ENV] = saved_key
        if not crd_was_there:
            kubectl("delete", "-f", str(CHART_CRDS), "--wait=false")


@pytest.fixture(scope="module", params=["fake", "docker", "kubernetes"])
def harness(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    settings = _settings(tmp_path_factory)
    if request.param == "fake":
        fake = FakeDriver()
        fake.add_image(PLUGIN, EchoPlugin)
        fake.add_image(f"{PLUGIN}-broken", BrokenPlugin)
        harness = Harness(fake, PLUGIN, f"{PLUGIN}-broken", settings)
        yield harness
        harness.remove_everything()
    elif request.param == "docker":
        driver, image, broken = _build_images(settings, tmp_path_factory)
        harness = Harness(driver, image, broken, settings)
        try:
            yield harness
        finally:
            harness.remove_everything()  # images and volumes too: they carry the installation labels
    else:
        yield from _kubernetes_harness(settings, tmp_path_factory)


@pytest.fixture
def rig(harness: Harness) -> Iterator[Harness]:
    """The module's harness; the instances a test started are removed after it."""
    yield harness
    harness.remove_started()
