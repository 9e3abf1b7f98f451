"""The `sysops` command line: built-in `plugin` commands plus every command that plugins contribute."""
