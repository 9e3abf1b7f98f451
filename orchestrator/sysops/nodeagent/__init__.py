"""The sysops node agent: enforces on each Kubernetes node the plugin limits Kubernetes cannot express.

`disk_io_mb_per_sec` (blkio throttle), `network_connections` (iptables connlimit in the pod's network
namespace) and a per-pod `pids` limit: the server writes what a plugin pod needs as the pod annotation
`sysops.dev/limits`, the agent (a privileged DaemonSet, `sysops node-agent`) applies it on its node and
writes what it reads back from the kernel into the pod's status as the condition `sysops.dev/limits-applied`
(the plugin pod's readiness gate). annotations.py is the contract between the two; the other modules run only
in the agent.
"""
