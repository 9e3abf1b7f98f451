"""sysops.control.v1: generated from control.proto by scripts/gen-protos.sh."""
