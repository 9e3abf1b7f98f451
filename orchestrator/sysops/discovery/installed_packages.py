"""Find plugins in the packages `sysops plugin install` put in `$SYSOPS_HOME/packages`.

Those directories are not on sysops' Python path (nothing of them is imported), so the entry-point scan
does not see them; each is read by distribution/packages.py (its distribution's `sysops.plugins` entry
point and the plugin.yaml it ships). One that cannot be read is skipped with its reason.
"""

from __future__ import annotations

from sysops.discovery.results import Location, Scan, Skipped
from sysops.distribution.packages import inspect_package, package_dirs
from sysops.errors import SysopsError
from sysops.settings import Settings


def scan_installed_packages() -> Scan:
    """The plugin directories of the packages installed by `sysops plugin install`, and what was skipped."""
    scan = Scan()
    for package_dir in package_dirs(Settings().home):
        try:
            package = inspect_package(package_dir)
        except SysopsError as error:
            scan.skipped.append(Skipped(str(package_dir), str(error)))
        except OSError as error:
            scan.skipped.append(Skipped(str(package_dir), f"cannot read: {error.strerror or error}"))
        else:
            source = f"installed package {package.distribution} {package.version}"
            scan.locations.append(Location(path=package.plugin_dir, origin=f"package {package.distribution}",
                                           source=source))  # fmt: skip
    return scan
