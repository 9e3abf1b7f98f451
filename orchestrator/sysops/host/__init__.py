"""The resident host: one long-lived orchestrator per installation that supervises plugins and serves the CLI."""
