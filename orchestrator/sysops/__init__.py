"""sysops: an operations CLI whose commands come from plugins, each running in its own container."""

__version__ = "0.1.0"
