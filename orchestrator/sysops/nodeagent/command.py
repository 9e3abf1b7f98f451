"""`sysops node-agent`: the command the chart's node agent DaemonSet runs on every node (charts/sysops,
templates/node-agent.yaml, `nodeAgent.enabled`). Its options come from the pod's environment."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Annotated

import typer

from sysops.errors import UsageError


def node_agent(
    node: Annotated[
        str, typer.Option("--node", envvar="NODE_NAME", help="This node's name (the DaemonSet: spec.nodeName)")
    ] = "",
    namespace: Annotated[
        str, typer.Option("--namespace", envvar="SYSOPS_NAMESPACE", help="The namespace of the plugin pods")
    ] = "",
    selector: Annotated[str, typer.Option("--selector", help="Label selector of the plugin pods")] = "sysops.plugin",
    cgroup_root: Annotated[
        Path, typer.Option("--cgroup-root", envvar="SYSOPS_CGROUP_ROOT", help="The node's cgroup filesystem")
    ] = Path("/sys/fs/cgroup"),
    host_root: Annotated[
        str,
        typer.Option(
            "--host-root", envvar="SYSOPS_HOST_ROOT", help="The node's root filesystem, whose iptables runs ('' = own)"
        ),
    ] = "",
) -> None:
    """Enforce plugin pods' disk I/O, connection and pids limits on this node (run by the chart's DaemonSet)."""
    if not node:
        raise UsageError("the node's name is not set", hint="pass --node or NODE_NAME (the DaemonSet sets it)")
    if not namespace:
        raise UsageError("the namespace is not set", hint="pass --namespace or SYSOPS_NAMESPACE")
    if not (cgroup_root / "pids").is_dir() and not (cgroup_root / "cgroup.controllers").exists():
        raise UsageError(f"{cgroup_root} is not a cgroup filesystem", hint="mount the node's /sys/fs/cgroup there")
    from kubernetes import client

    from sysops.nodeagent.agent import Enforcer, NodeAgent
    from sysops.nodeagent.cgroup_limits import CgroupLimiter
    from sysops.nodeagent.connections import ConnectionLimiter
    from sysops.runtime.kubernetes.driver import load_client_config

    logging.basicConfig(format="sysops node-agent: %(levelname)s %(message)s", level=logging.INFO)
    load_client_config()
    enforcer = Enforcer(CgroupLimiter(root=cgroup_root), ConnectionLimiter(host_root=host_root))
    NodeAgent(client.CoreV1Api(), namespace, node, selector, enforcer).run(threading.Event())
