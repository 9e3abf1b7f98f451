"""ADR-006's MonitoringPlugin as a runnable sysops plugin."""
