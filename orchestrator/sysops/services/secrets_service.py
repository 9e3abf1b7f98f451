"""The `secrets` host service: an integration plugin's secrets, given by reference and read when asked.

A secret is never in an image, a manifest or the store. The manifest's `secrets:` lists the names a plugin
may ask for (what it ASKS); the operator's policy says where each one comes from (what it is GIVEN),
`plugins.NAME.secrets.SECRET`:

- `{file: /abs/path}`: the host reads the file at call time (so a rotated file is served at once);
- `{kubernetes: {name, key}}`: the server reads that key of a Secret in its own namespace through the API
  (runtime/kubernetes/secrets.py; the chart's Role allows `get` on the Secrets its values name).

So a call needs both, and no permission grant besides (permissions.py: the service checks itself). Only the
plugin's own policy entry counts (a side-by-side version `NAME--vMAJOR` uses NAME's), never `plugins."*"`.
The value is returned to the calling plugin only: it is never logged, recorded as an event or kept.
Refusals and failures name the secret and the policy key, never the value. One trailing newline of the
value is dropped (files written by `echo` end in one).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import Any

from sysops.core.dependencies import plugin_name_of
from sysops.core.policy import Policy, SecretReference
from sysops.errors import SysopsError
from sysops.services.call import Caller, ServiceCallError
from sysops.services.limits import check_arguments, text_argument

#: Largest secret served, in bytes (a token, a key, a small credentials file).
SECRET_BYTES = 64 * 1024
#: A secret name is at most this long (the manifest's rule).
_NAME_LIMIT = 63

#: Reads one Kubernetes Secret key: (secret name, key) -> bytes; raises SysopsError when it cannot.
KubernetesReader = Callable[[str, str], bytes]


def read_kubernetes_secret(name: str, key: str) -> bytes:
    """The server's reader: the Kubernetes client, imported only when a policy names a Kubernetes Secret."""
    from sysops.runtime.kubernetes.secrets import read_secret_key

    return read_secret_key(name, key)


class SecretsService:
    """Answers `secrets.get(name)` for the plugin that calls."""

    def __init__(
        self,
        manifest: Callable[[str], dict[str, Any] | None],
        policy: Callable[[], Policy],
        policy_location: Callable[[str], str],
        kubernetes: KubernetesReader = read_kubernetes_secret,
    ) -> None:
        self._manifest = manifest
        self._policy = policy
        #: Where a policy key is set ("plugins.x.secrets in /etc/sysops/policy.yaml", or the Helm value).
        self._location = policy_location
        self._kubernetes = kubernetes

    def handle(self, caller: Caller, method: str, arguments: dict[str, Any]) -> Any:
        """`get`: {"value": the secret as text}."""
        check_arguments(arguments, ("name",), "secrets.get")
        name = text_argument(arguments, "name", _NAME_LIMIT)
        return {"value": self.read(caller.plugin, name)}

    def reference(self, plugin: str, name: str) -> SecretReference:
        """Where `plugin`'s secret `name` comes from; PERMISSION_DENIED when the manifest or the policy lacks it."""
        listed = (self._manifest(plugin) or {}).get("secrets") or []
        if name not in listed:
            raise ServiceCallError(
                "permission_denied",
                f"plugin '{plugin}' asked for secret '{name}', which its manifest does not list "
                "(add it to secrets: in plugin.yaml)",
            )
        named = plugin_name_of(plugin)  # a side-by-side version (NAME--vMAJOR) has its plugin's entry
        entry = self._policy().plugins.get(named)
        reference = entry.secrets.get(name) if entry is not None else None
        if reference is None:
            raise ServiceCallError(
                "permission_denied",
                f"plugin '{plugin}' asked for secret '{name}', which policy does not give (add "
                f"{{file: /path}} or {{kubernetes: {{name, key}}}} under {self._location(f'{named}.secrets.{name}')})",
            )
        return reference

    def read(self, plugin: str, name: str) -> str:
        """The secret's text, read now from where the policy says."""
        reference = self.reference(plugin, name)
        key = f"plugins.{plugin_name_of(plugin)}.secrets.{name}"
        try:
            data = self._read_file(reference.file) if reference.file is not None else self._read_kubernetes(reference)
        except OSError as error:
            raise ServiceCallError(
                "unavailable",
                f"secret '{name}' of plugin '{plugin}' cannot be read ({key}): {reference.file}: "
                f"{error.strerror or error}",
            ) from None
        except SysopsError as error:
            raise ServiceCallError(
                "unavailable", f"secret '{name}' of plugin '{plugin}' cannot be read ({key}): {error.message}"
            ) from None
        if len(data) > SECRET_BYTES:
            raise ServiceCallError(
                "unavailable", f"secret '{name}' of plugin '{plugin}' ({key}) is above {SECRET_BYTES} bytes"
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ServiceCallError(
                "unavailable", f"secret '{name}' of plugin '{plugin}' ({key}) is not UTF-8 text"
            ) from None
        return text.removesuffix("\n").removesuffix("\r")

    @staticmethod
    def _read_file(path: str) -> bytes:
        # Symlinks are followed: an operator may point at a mounted Secret's file (a ..data link). But only
        # through what this user or root owns: the host often runs as root, and a link another user can
        # replace would hand a plugin /etc/shadow (ssh's StrictModes rule, applied to the path and its target).
        _check_trusted_path(path)
        _check_trusted_path(os.path.realpath(path))
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or device would block or never end
            raise OSError(0, "not a regular file")
        # Checked again through the handle: the path may be swapped after the check, and a FIFO without a
        # writer would block this thread in open() (O_NONBLOCK opens it at once, to be refused).
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY), "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise OSError(0, "not a regular file")
            if mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise OSError(0, "writable by others: refused as a secret")
            return handle.read(SECRET_BYTES + 1)

    def _read_kubernetes(self, reference: SecretReference) -> bytes:
        assert reference.kubernetes is not None  # SecretReference holds exactly one source
        return self._kubernetes(reference.kubernetes.name, reference.kubernetes.key)


def _check_trusted_path(path: str) -> None:
    """Refuse (OSError) a path another user could change: every component must be owned by root or this
    user, and no directory on the way may be writable by others unless it is sticky (/tmp: others cannot
    replace what they do not own there)."""
    trusted = {0, os.geteuid()}
    parent = "/"
    for part in [part for part in path.split("/") if part]:
        current = os.path.join(parent, part)
        parent_mode = os.lstat(parent).st_mode
        if parent_mode & (stat.S_IWGRP | stat.S_IWOTH) and not parent_mode & stat.S_ISVTX:
            raise OSError(0, f"directory {parent} is writable by others: refused as a path to a secret")
        status = os.lstat(current)
        if status.st_uid not in trusted:
            raise OSError(0, f"{current} is owned by uid {status.st_uid}, neither root nor this user: refused")
        parent = current
