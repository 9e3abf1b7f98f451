"""ADR-006's deploy_service: a command the host runs only when policy grants both of its permissions.

`deploy-service` is marked `@requires_permission("deployment.execute")` and
`@requires_permission("service.scale")` as in the ADR; the host refuses the call (exit 9, naming the
missing grant) before it reaches the plugin unless the operator's policy grants both. The deployment is a
record, not a real rollout (the example has no cluster to act on): the last one per service is kept in the
plugin's host-side state, which survives restarts, reloads and rollbacks, each one is announced on the
`deploy.finished` topic for subscribers and written to the plugin's structured log.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sysops_sdk import Plugin, argument, option, plugin_command, requires_permission

#: State key prefix of the last deployment of each service.
DEPLOYMENT_PREFIX = "deployments/"
#: Topic announcing every finished deployment.
FINISHED_TOPIC = "deploy.finished"
#: Tries of the compare-and-set before giving up (another replica deploying the same service at once).
CAS_TRIES = 5


class ConcurrentDeploymentError(RuntimeError):
    """Another instance kept recording a deployment of the same service while this one tried."""


class DeployPlugin(Plugin):
    name = "deploy"
    version = "1.0.0"
    description = "Records deployments of services and announces each on deploy.finished"

    def initialize(self) -> None:
        self.state = self.get_service("state")
        self.log = self.get_service("logs")

    def cleanup(self) -> None:
        pass

    @plugin_command("deploy-service")
    @argument("service", help="The service to deploy")
    @option("--version", help="Version to deploy")
    @option("--replicas", help="Replicas to scale the service to")
    @requires_permission("deployment.execute")
    @requires_permission("service.scale")
    def deploy_service(self, service: str, version: str = "latest", replicas: int = 1) -> dict[str, Any]:
        """Deploy service with proper permissions."""
        key = DEPLOYMENT_PREFIX + service
        for _ in range(CAS_TRIES):
            previous, state_version = self.state.get_versioned(key)
            number = previous["number"] + 1 if previous else 1
            deployment = {
                "service": service,
                "version": version,
                "replicas": replicas,
                "number": number,
                "previous_version": previous["version"] if previous else None,
                "time": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            if self.state.compare_and_set(key, deployment, expected_version=state_version):
                self.publish(FINISHED_TOPIC, deployment)
                self.log.info("deployed", service=service, version=version, replicas=replicas, number=number)
                return deployment
        raise ConcurrentDeploymentError(f"service {service!r} changed {CAS_TRIES} times while deploying; try again")

    @plugin_command("deploy last", read_only=True)
    @argument("service", help="The service whose last deployment to show")
    def last(self, service: str) -> dict[str, Any]:
        """Show the last deployment of a service."""
        deployment = self.state.get(DEPLOYMENT_PREFIX + service)
        if deployment is None:
            raise LookupError(f"service {service!r} was never deployed")
        return dict(deployment)

    @plugin_command("deploy ls", read_only=True)
    def list_deployments(self) -> list[dict[str, Any]]:
        """List the last deployment of every service."""
        return [self.state.get(key) for key in self.state.list(DEPLOYMENT_PREFIX)]
