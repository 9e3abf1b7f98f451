"""sysops.plugin.v1: generated from plugin.proto by scripts/gen-protos.sh."""
