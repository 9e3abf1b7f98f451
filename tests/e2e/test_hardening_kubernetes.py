"""Kubernetes on a real cluster: a plugin asking for whole cores and whole GiB rolls out, and cancelled log
followers give their slot back at once.

The API server stores `1000m` as `1` and `1024Mi` as `1Gi`; the read-back after a roll compared them as
strings and failed every such rollout. Runs `sysops serve --runtime kubernetes` on this machine
(kubeconfig) in a namespace of its own, which is deleted afterwards.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path

import grpc
from sysops.server.protocol.v1 import control_pb2 as pb
from sysops.server.protocol.v1 import control_pb2_grpc as pb_grpc
from sysops.settings import Settings

from tests.e2e.test_kubernetes import delete_namespace, kubectl, remove_built_images
from tests.e2e.test_kubernetes import pytestmark as kubernetes_marks
from tests.integration.conftest import SYSOPS, Sysops, copy_example

pytestmark = kubernetes_marks
FOLLOWERS = 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_whole_cores_and_gibibytes_roll_out_and_cancelled_followers_free_their_slots(tmp_path: Path) -> None:
    namespace = f"sysops-quantities-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    token, port = uuid.uuid4().hex, _free_port()
    server_env = {
        **os.environ, "SYSOPS_NAMESPACE": namespace, "SYSOPS_SERVER_TOKEN": token, "SYSOPS_HOME": str(tmp_path / "srv"),
        "SYSOPS_SERVER_MAX_FOLLOWERS": str(FOLLOWERS),
    }  # fmt: skip
    server = subprocess.Popen(
        [SYSOPS, "serve", "--runtime", "kubernetes", "--listen", f"127.0.0.1:{port}"],
        env=server_env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    cli_env = {**os.environ, "SYSOPS_HOME": str(tmp_path / "cli"), "SYSOPS_SERVER": f"127.0.0.1:{port}"}
    cli = Sysops(home=tmp_path / "cli", env={**cli_env, "SYSOPS_TOKEN": token, "SYSOPS_INSECURE": "1"})  # plaintext
    try:
        assert server.stderr is not None and "control API on" in server.stderr.readline()
        plugin_dir = copy_example("hello", tmp_path)
        manifest = plugin_dir / "plugin.yaml"
        manifest.write_text(
            re.sub(r"(?m)^limits: .*$", "limits: {cpu_percent: 100, memory_mb: 1024, pids: 64}", manifest.read_text())
        )
        up = cli.run("plugin", "up", str(plugin_dir), "--runtime", "kubernetes")
        assert up.returncode == 0, up.stderr
        assert cli.ok("greet", "cores") == "Hello, cores!\n"
        status = json.loads(cli.ok("plugin", "status", "hello", "--output", "json"))
        assert status["limits"]["mismatches"] == []
        # canonical, as the API server stores them
        assert status["limits"]["applied"] == {"cpu": "1", "memory": "1Gi", "data": "256Mi"}
        _cancelled_followers_free_their_slots(port, token)
        cli.ok("plugin", "down", "hello")
    finally:
        server.terminate()
        server.wait(timeout=20)
        delete_namespace(namespace)
        remove_built_images(Settings(home=tmp_path / "srv").installation_id)


def _cancelled_followers_free_their_slots(port: int, token: str) -> None:
    """Fill the follower slots, cancel, and fill them again: the pod log streams were closed, not abandoned."""
    metadata = (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.ControlStub(channel)
        for _round in range(2):
            calls = [
                stub.Logs(pb.LogsRequest(name="hello", follow=True, tail=1), metadata=metadata)
                for _ in range(FOLLOWERS)
            ]
            assert all("serving on" in next(call).text for call in calls)
            for call in calls:
                call.cancel()
            time.sleep(1.0)  # the server polls its followers every 0.2 s
