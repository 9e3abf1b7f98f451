"""Discovery: the plugins an installation knows without being given a directory on the command line.

`discover()` scans the directories of `SYSOPS_PLUGIN_PATH` and of `plugin_dirs` in the installation's
config.yaml (directories.py) and the installed packages with a `sysops.plugins` entry point
(entry_points.py), validates each plugin.yaml and returns what it found and what it skipped, and why
(collect.py). `find_discovered(name)` is what `sysops plugin up NAME` resolves a name with.
"""

from sysops.discovery.collect import discover, find_discovered
from sysops.discovery.results import DiscoveredPlugin, Discovery, Skipped

__all__ = ["DiscoveredPlugin", "Discovery", "Skipped", "discover", "find_discovered"]
