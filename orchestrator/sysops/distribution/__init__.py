"""Where plugins come from: install sources (pip, git, paths), OCI registries, and plugin indexes."""
