"""ADR-006's deploy_service as a runnable sysops plugin."""
