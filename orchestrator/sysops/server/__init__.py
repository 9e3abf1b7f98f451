"""`sysops serve`: the orchestrator as a long-lived server with an authenticated gRPC control API."""
