"""Host services: what a plugin calls back into the host for (state, config, metrics, alerts, events, logs).

The entry point is `sysops.services.dispatch.HostServices` (the permission check, then the service);
the transport (transport.py) and the event bus (bus.py) sit on it. One job per module:
permissions.py (the method -> permission table, grant matching), call.py (Caller, ServiceCallError),
database.py (a SQLite connection per thread), limits.py (the limits and shared argument checks),
state.py, config.py, metrics.py, alerts.py, logs.py (one service each). Nothing is imported here, so
importing one module does not load prometheus-client or the others.
"""
