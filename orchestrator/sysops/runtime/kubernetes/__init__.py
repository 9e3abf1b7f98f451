"""The Kubernetes runtime: driver and the desired-state mirror."""
