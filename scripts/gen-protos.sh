#!/usr/bin/env bash
# Regenerate the gRPC stubs of the plugin protocol (committed, so plugin images need no grpcio-tools).
set -euo pipefail
cd "$(dirname "$0")/../sdk"
python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. sysops_sdk/protocol/v1/plugin.proto sysops_sdk/protocol/v1/host.proto
cd ../orchestrator
python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. sysops/server/protocol/v1/control.proto
