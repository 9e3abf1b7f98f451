"""The operator's side of the host services, as the control API serves it: five views and four actions.

`Query` kinds `permissions`, `config`, `metrics`, `alerts` and `system-config` answer from the host services
(any role);
`Act` kinds change something, each needing a role (server/roles.py) checked here before anything runs:

    config-set      {"plugin", "key", "value"}   admin     VALUE as typed (JSON if it parses and the key is not
                                                           a str, else the text), validated against the schema
    events-publish  {"topic", "payload"}         operator  published as "operator"; `sysops.*` refused
    alert-resolve   {"plugin", "name"}           operator  resolve a plugin's open alert
    system-config-validate {"file", "text"}      viewer    the problems of a config file's text (`sysops config
                                                           validate`); the view `system-config` shows the host's
    upgrade-approve {"plugin", "digest"}         admin     approve the held upgrade of that digest (the view
                                                           `held` shows it; core/held_upgrades.py)

Replies are JSON-able data whose shape docs/cli.md and the CLI (cli/services_cmd.py) rely on. The services
are attached to the control server (`ControlServicer.attach_host_services`) once the host has built them;
until then these calls answer exit 5 with one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sysops.core.held_upgrades import APPROVE_ACTION, HELD_VIEW, approve, held_view
from sysops.core.names import check_plugin_name, shown
from sysops.errors import EngineUnavailableError, NotFoundError, UsageError
from sysops.server.roles import Caller, Role, require

if TYPE_CHECKING:
    from sysops.services.alerts import AlertService
    from sysops.services.config import ConfigService
    from sysops.services.logs import LogService
    from sysops.services.metrics import MetricsService
    from sysops.services.system_config import SystemConfig
    from sysops.settings import Settings

#: The publisher of events an operator publishes (`sysops events publish`).
OPERATOR_PUBLISHER = "operator"
VIEWS = ("permissions", "config", "metrics", "alerts", "system-config", HELD_VIEW)
#: Act kind -> (the role it needs, what the refusal says the caller may not do).
ACTIONS: Mapping[str, tuple[Role, str]] = {
    "config-set": (Role.ADMIN, "set plugin config"),
    "events-publish": (Role.OPERATOR, "publish events"),
    "alert-resolve": (Role.OPERATOR, "resolve alerts"),
    "system-config-validate": (Role.VIEWER, "validate the system configuration"),
    APPROVE_ACTION: (Role.ADMIN, "approve held upgrades"),
}


class OperatorServices(Protocol):
    """What the views and actions need of the host services (services/dispatch.py HostServices)."""

    @property
    def settings(self) -> Settings:
        """The installation's settings (its home holds the held upgrades)."""

    def permission_report(self, plugin: str) -> Any:
        """asked / granted / refused of a plugin."""

    def policy(self) -> Any:
        """The policy in effect."""

    def manifest(self, plugin: str) -> dict[str, Any] | None:
        """The plugin's stored manifest, or None for a plugin sysops does not know."""

    @property
    def config(self) -> ConfigService:
        """The config service."""

    @property
    def metrics(self) -> MetricsService:
        """The metrics service."""

    @property
    def alerts(self) -> AlertService:
        """The alerts service."""

    @property
    def logs(self) -> LogService:
        """The structured log records (`sysops plugin logs --structured`)."""

    @property
    def system_config(self) -> SystemConfig:
        """The system configuration (`sysops config show|validate`)."""


#: The event bus's publish(topic, payload, publisher) -> event id (services/bus.py EventBus.publish).
Publish = Callable[[str, Any, str], int]


@dataclass
class HostServicesLink:
    """The host services and event bus a control server answers from (attached once the host has built them)."""

    services: OperatorServices | None = None
    publish: Publish | None = None

    def ready(self) -> OperatorServices:
        """The services, or exit 5 with one line when this host or server runs none."""
        if self.services is None:
            raise EngineUnavailableError("host services are not running in this sysops host or server")
        return self.services


def view(link: HostServicesLink, kind: str, name: str, *, include_all: bool = False) -> Any:
    """The answer to a `Query` of one of VIEWS (`name`: the plugin, or "" for all where that makes sense)."""
    ready = link.ready()
    plugin = check_plugin_name(name) if name or kind in ("permissions", "config", HELD_VIEW) else ""
    if kind == "permissions":
        return permissions_view(ready, plugin)
    if kind == "config":
        return {"plugin": plugin, "keys": ready.config.show(plugin)}
    if kind == "metrics":
        text = ready.metrics.render().decode()
        return {"text": only_plugin(text, plugin) if plugin else text}
    if kind == "alerts":
        found = ready.alerts.list(plugin or None, include_resolved=include_all)
        return {"alerts": [alert.as_dict() for alert in found]}
    if kind == "system-config":
        return ready.system_config.show()
    if kind == HELD_VIEW:
        return held_view(ready.settings.home, plugin)
    raise NotFoundError(f"unknown query {shown(kind)}")


def permissions_view(services: OperatorServices, plugin: str) -> dict[str, Any]:
    """Each permission the plugin asks: granted or refused, and the policy grant that matched it."""
    from sysops.core.policy import grants_for
    from sysops.services.permissions import grant_matches

    if services.manifest(plugin) is None:
        raise NotFoundError(f"no plugin {shown(plugin)}", hint="`sysops plugin ls` lists the plugins")
    report = services.permission_report(plugin)
    grants = grants_for(services.policy(), plugin)
    rows = [
        {
            "permission": permission,
            "asked": True,
            "status": "granted" if permission in report.granted else "refused",
            "grant": next((grant for grant in grants if grant_matches(grant, permission)), None),
        }
        for permission in report.asked
    ]
    return {
        "plugin": plugin,
        "asked": list(report.asked),
        "granted": list(report.granted),
        "refused": list(report.refused),
        "permissions": rows,
    }


def only_plugin(text: str, plugin: str) -> str:
    """The Prometheus text `text` reduced to the samples labelled `plugin="<plugin>"` (prometheus_client's
    parser and exposition, so escaping stays theirs)."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.registry import CollectorRegistry

    families = []
    for family in text_string_to_metric_families(text):
        family.samples = [sample for sample in family.samples if sample.labels.get("plugin") == plugin]
        if family.samples:
            families.append(family)

    class Parsed:
        def collect(self) -> Any:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Parsed())
    return generate_latest(registry).decode()


def act(link: HostServicesLink, caller: Caller, kind: str, arguments: Any) -> Any:
    """Run an `Act` for `caller` if its role allows; the JSON-able result."""
    needed = ACTIONS.get(kind)
    if needed is None:
        raise NotFoundError(f"unknown action {shown(kind)} (actions: {', '.join(ACTIONS)})")
    require(caller, *needed)
    if not isinstance(arguments, dict):
        raise UsageError(f"the arguments of {kind!r} are not a JSON object")
    return _HANDLERS[kind](link, arguments)


def _text(arguments: dict[str, Any], key: str, kind: str) -> str:
    value = arguments.get(key)
    if not isinstance(value, str) or not value:
        raise UsageError(f"{kind}: argument {key!r} must be a non-empty string")
    return value


def _config_set(link: HostServicesLink, arguments: dict[str, Any]) -> Any:
    plugin = check_plugin_name(_text(arguments, "plugin", "config-set"))
    key = _text(arguments, "key", "config-set")
    raw = arguments.get("value")
    if not isinstance(raw, str):
        raise UsageError("config-set: argument 'value' must be the value as typed (a string)")
    value = link.ready().config.set_value(plugin, key, raw)
    return {"plugin": plugin, "key": key, "value": value}


def _events_publish(link: HostServicesLink, arguments: dict[str, Any]) -> Any:
    from sysops.services.limits import check_payload, check_topic

    topic = check_topic(arguments.get("topic"))
    if "payload" not in arguments:
        raise UsageError("events-publish: argument 'payload' is required")
    check_payload(arguments["payload"])
    if link.publish is None:
        raise EngineUnavailableError("the event bus is not running in this sysops host or server")
    return {"id": link.publish(topic, arguments["payload"], OPERATOR_PUBLISHER), "topic": topic}


def _alert_resolve(link: HostServicesLink, arguments: dict[str, Any]) -> Any:
    plugin = check_plugin_name(_text(arguments, "plugin", "alert-resolve"))
    name = _text(arguments, "name", "alert-resolve")
    return {"plugin": plugin, "name": name, "resolved": link.ready().alerts.resolve(plugin, name)}


def _system_config_validate(link: HostServicesLink, arguments: dict[str, Any]) -> Any:
    file = _text(arguments, "file", "system-config-validate")
    text = arguments.get("text")
    if not isinstance(text, str):
        raise UsageError("system-config-validate: argument 'text' must be the file's text (a string)")
    return link.ready().system_config.validate(text, file)


_HANDLERS: Mapping[str, Callable[[HostServicesLink, dict[str, Any]], Any]] = {
    "config-set": _config_set,
    "events-publish": _events_publish,
    "alert-resolve": _alert_resolve,
    "system-config-validate": _system_config_validate,
    APPROVE_ACTION: lambda link, arguments: approve(link.ready().settings.home, arguments),
}
