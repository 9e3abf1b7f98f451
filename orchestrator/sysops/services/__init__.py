"""Host services a plugin calls back through get_service: state, config, metrics, alerts, events, logs."""
