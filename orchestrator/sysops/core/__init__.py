"""The orchestrator core: manifest, lifecycle, router, rollout and the orchestrator that joins them."""
