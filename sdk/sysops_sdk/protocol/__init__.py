"""Generated gRPC stubs of the sysops plugin protocol, one package per major version."""
