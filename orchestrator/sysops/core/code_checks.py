"""The static checks of a plugin's code as `plugin up` and `plugin check` run them: over what the build ships.

sysops/checks knows the rules but sits below imaging; the build's ignore rules (built-in caches and virtual
environments, the plugin's .gitignore and .dockerignore: imaging/context.py) and the operator's policy file
(core/policy.py) are joined here, so a plugin's `.venv` or its ignored test directory is neither shipped nor
judged, and every caller applies the same policy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sysops.checks.findings import Finding
from sysops.checks.policy import CheckPolicy
from sysops.checks.run import analyze, check_before_build
from sysops.core.manifest import Manifest
from sysops.core.policy import load_policy
from sysops.imaging.context import IgnoreRules


def shipped_code_findings(home: Path, plugin_dir: Path, manifest: Manifest) -> tuple[list[Finding], CheckPolicy]:
    """The findings in the code the build would ship, and the policy's `checks:` in effect (nothing kept)."""
    return analyze(plugin_dir, manifest, IgnoreRules.load(plugin_dir).ignores), load_policy(home).checks


def check_plugin_code(home: Path, plugin_dir: Path, manifest: Manifest, progress: Callable[[str], None]) -> None:
    """Refuse (PolicyDeniedError, exit 9) a plugin whose shipped code has a finding the policy blocks; keep the
    report for the rating either way (checks/run.py)."""
    policy = load_policy(home).checks
    check_before_build(home, plugin_dir, manifest, policy, progress, IgnoreRules.load(plugin_dir).ignores)
