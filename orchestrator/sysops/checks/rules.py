"""Our own AST rules: what a plugin's code does, compared with what its manifest asks for.

bandit judges code on its own; these rules judge it against plugin.yaml, and each names the manifest key
or permission that is missing:

- `network-undeclared` (medium): a network library is imported or called (socket, urllib.request,
  http.client, requests, httpx, ...) while `network: none`. The container has no network then, so the code
  fails or probes: worth a reviewer's look, and the sandbox enforces it anyway.
- `process-spawn` (medium): subprocess, os.system/popen/exec*/spawn*/fork, pty.spawn.
- `dynamic-code` (medium): the builtins exec, eval and compile, and `__import__`/importlib with a
  computed name (code the checks cannot see).
- `native-code` (medium): ctypes or cffi (native calls the analysis cannot follow).
- `write-outside-data` (medium): a write to a literal path outside /data and /tmp (open with a w/a/x/+
  mode, Path.write_text/write_bytes, os.remove/unlink/rmdir/mkdir/makedirs/rename/replace, shutil.rmtree/
  move/copy*); the root filesystem is read-only at run time, so such code fails or probes.
- `service-undeclared` (medium): `get_service("NAME")` (or `self.publish`) of a host service none of whose
  permissions the manifest asks for (the table is services/permissions.py's); `service-unknown` (low): a
  service name that does not exist.

Names are followed through import aliases (`import subprocess as sp`, `from os import system`, `posix` for
`os`), literal `importlib.import_module`/`__import__`/`getattr`, process functions taken as values, and
module-level string constants (`MARKER = "/etc/x"`); anything computed at run time is out of reach of a
static rule, which is why dynamic code is itself a finding.
"""

from __future__ import annotations

import ast
import posixpath
from collections.abc import Iterator

from sysops.checks.findings import Finding, Severity
from sysops.checks.sources import SourceFile
from sysops.core.manifest import Manifest
from sysops.safe_text import cap, escape_controls
from sysops.services.permissions import SERVICES, methods_of, permission_for

NETWORK_MODULES = frozenset(
    {
        "socket", "ssl", "urllib.request", "http.client", "http.server", "socketserver", "ftplib", "smtplib",
        "poplib", "imaplib", "telnetlib", "xmlrpc.client", "requests", "httpx", "aiohttp", "urllib3", "websocket",
        "websockets", "paramiko", "asyncssh", "pycurl", "dns.resolver",
    }
)  # fmt: skip
NATIVE_MODULES = frozenset({"ctypes", "cffi"})
PROCESS_CALLS = frozenset(
    {f"subprocess.{name}" for name in ("run", "call", "check_call", "check_output", "Popen", "getoutput",
                                        "getstatusoutput")}
    | {f"os.{name}" for name in ("system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp", "execv",
                                  "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnl",
                                  "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe")}
    | {"pty.spawn", "asyncio.create_subprocess_exec", "asyncio.create_subprocess_shell"}
)  # fmt: skip
DYNAMIC_BUILTINS = frozenset({"exec", "eval", "compile"})
DYNAMIC_IMPORTS = frozenset({"__import__", "importlib.import_module"})
#: Calls whose first argument is a path they write, remove or create.
PATH_WRITES = frozenset(
    {f"os.{name}" for name in ("remove", "unlink", "rmdir", "removedirs", "mkdir", "makedirs", "rename", "renames",
                               "replace", "truncate", "chmod", "chown", "symlink", "link", "mkfifo")}
    | {"shutil.rmtree", "shutil.move", "shutil.copy", "shutil.copy2", "shutil.copyfile", "shutil.copytree"}
)  # fmt: skip
#: Calls whose second argument is the path they write.
DESTINATION_WRITES = frozenset(
    {"shutil.move", "shutil.copy", "shutil.copy2", "shutil.copyfile", "shutil.copytree", "os.rename", "os.replace",
     "os.symlink", "os.link"}
)  # fmt: skip
PATH_METHOD_WRITES = frozenset({"write_text", "write_bytes", "unlink", "rmdir", "mkdir", "touch", "symlink_to"})
WRITABLE_ROOTS = ("/data", "/tmp")
HARMLESS_PATHS = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr"})
#: `get_service` names the SDK maps to another service.
SERVICE_ALIASES = {"alerting": "alerts"}


def manifest_findings(source: SourceFile, manifest: Manifest) -> list[Finding]:
    """The findings of every rule of this module in one parsed file."""
    return list(_FileRules(source, manifest).run())


class _FileRules:
    """The rules over one file: imports and constants are read first, then every call is judged."""

    def __init__(self, source: SourceFile, manifest: Manifest) -> None:
        self.source = source
        self.manifest = manifest
        self.aliases: dict[str, str] = {}
        self.constants: dict[str, str] = {}
        #: Network modules already reported (a call through one reached another way, `urllib.request.urlopen`
        #: after `import urllib`, is reported at the call).
        self.network_modules_seen: set[str] = set()
        #: `get_service(...)` calls already judged with the method called on them.
        self.judged: set[int] = set()

    def run(self) -> Iterator[Finding]:
        self._read_constants()
        called = {id(node.func) for node in ast.walk(self.source.tree) if isinstance(node, ast.Call)}
        for node in ast.walk(self.source.tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield from self._import(node)
            elif isinstance(node, ast.Call):
                yield from self._call(node)
            elif isinstance(node, ast.Attribute | ast.Name) and id(node) not in called:
                yield from self._reference(node)

    def _reference(self, node: ast.Attribute | ast.Name) -> Iterator[Finding]:
        """A process function taken as a value (`spawn = subprocess.Popen`) is called later, out of sight."""
        name = self._qualified(node)
        if name in PROCESS_CALLS:
            yield self._finding(node, "process-spawn", f"refers to {name}: starts a process or replaces this one")

    def _finding(self, node: ast.AST, rule: str, message: str, severity: Severity = "medium") -> Finding:
        shown = cap(escape_controls(message, one_line=True))  # literals of the plugin's code are quoted
        return Finding(self.source.relative, getattr(node, "lineno", 0), rule, severity, shown)

    def _read_constants(self) -> None:
        """Module-level `NAME = "text"` assignments made once, so a path held in a constant is still seen."""
        assigned: dict[str, int] = {}
        for node in self.source.tree.body:
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        assigned[target.id] = assigned.get(target.id, 0) + 1
                        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                            self.constants[target.id] = node.value.value
        for name, count in assigned.items():
            if count > 1:
                self.constants.pop(name, None)

    def _import(self, node: ast.Import | ast.ImportFrom) -> Iterator[Finding]:
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
            for alias in node.names:
                top = alias.name.split(".")[0]
                self.aliases[alias.asname or top] = alias.name if alias.asname else top
        else:
            base = node.module or ""
            modules = [base, *(f"{base}.{alias.name}" for alias in node.names)] if node.level == 0 else []
            for alias in node.names:
                if node.level == 0:
                    self.aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
        for module in modules:
            yield from self._module_use(node, module)

    def _module_use(self, node: ast.AST, module: str) -> Iterator[Finding]:
        if module in NETWORK_MODULES and self.manifest.network == "none":
            self.network_modules_seen.add(module)
            yield self._finding(node, "network-undeclared", f"uses {module} but plugin.yaml says network: none")
        if module in NATIVE_MODULES:
            yield self._finding(node, "native-code", f"imports {module}: native calls the checks cannot follow")

    def _qualified(self, node: ast.expr) -> str:
        """`subprocess.run` for `sp.run` after `import subprocess as sp`; "" for what is not a dotted name.

        A module named by a literal (`importlib.import_module("os")`, `__import__("os")`) or an attribute fetched
        by one (`getattr(os, "system")`) is as plain as an import; `posix` is what `os` re-exports.
        """
        name = ""
        if isinstance(node, ast.Name):
            name = self.aliases.get(node.id, node.id)
        elif isinstance(node, ast.Attribute):
            base = self._qualified(node.value)
            name = f"{base}.{node.attr}" if base else ""
        elif isinstance(node, ast.Call) and node.args:
            function = self._qualified(node.func)
            if function in DYNAMIC_IMPORTS:
                name = self._literal(node.args[0]) or ""
            elif function == "getattr" and len(node.args) >= 2:
                base, attribute = self._qualified(node.args[0]), self._literal(node.args[1])
                name = f"{base}.{attribute}" if base and attribute else ""
        module, dot, rest = name.partition(".")
        return f"os{dot}{rest}" if module == "posix" else name

    def _literal(self, node: ast.expr) -> str | None:
        """The text of a string literal, a module constant, or a Path("...") of one; None otherwise."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return self.constants.get(node.id)
        if isinstance(node, ast.Call) and self._qualified(node.func) in {"pathlib.Path", "pathlib.PurePath"}:
            return self._literal(node.args[0]) if len(node.args) == 1 else None
        return None

    def _call(self, node: ast.Call) -> Iterator[Finding]:
        name = self._qualified(node.func)
        if name in PROCESS_CALLS:
            yield self._finding(node, "process-spawn", f"calls {name}: starts a process or replaces this one")
        elif name in DYNAMIC_BUILTINS and name not in self.aliases:
            yield self._finding(node, "dynamic-code", f"calls {name}(): runs code the checks cannot see")
        elif name in DYNAMIC_IMPORTS:
            module = self._literal(node.args[0]) if node.args else None
            if module is None:
                yield self._finding(node, "dynamic-code", f"calls {name} with a computed module name")
            else:
                yield from self._module_use(node, module)
        module = name.rpartition(".")[0]
        if module in NETWORK_MODULES and module not in self.network_modules_seen:
            yield from self._module_use(node, module)
        yield from self._writes(node, name)
        yield from self._services(node)

    def _writes(self, node: ast.Call, name: str) -> Iterator[Finding]:
        paths: list[ast.expr] = []
        if name in {"open", "io.open"} and node.args and _writes_mode(node):
            paths.append(node.args[0])
        elif name in PATH_WRITES and node.args:
            paths.append(node.args[0])
            if name in DESTINATION_WRITES and len(node.args) > 1:
                paths.append(node.args[1])
        elif isinstance(node.func, ast.Attribute):
            method = node.func.attr
            if method in PATH_METHOD_WRITES or (method == "open" and _writes_mode(node, mode_index=0)):
                paths.append(node.func.value)
        for path_node in paths:
            path = self._literal(path_node)
            if path is not None and not _writable(path):
                where = "a relative path (the working directory)" if not path.startswith("/") else path
                yield self._finding(node, "write-outside-data", f"writes {where}: only /data and /tmp are writable")

    def _services(self, node: ast.Call) -> Iterator[Finding]:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "publish" and _is_self(func.value):
            yield from self._service_use(node, "events", "publish")
            return
        inner = func.value if isinstance(func, ast.Attribute) else None
        if isinstance(inner, ast.Call) and _is_get_service(inner) and isinstance(func, ast.Attribute):
            self.judged.add(id(inner))  # get_service("state").set(...): the method says which permission
            yield from self._get_service(inner, func.attr)
        elif _is_get_service(node) and id(node) not in self.judged:
            yield from self._get_service(node, "")

    def _get_service(self, node: ast.Call, method: str) -> Iterator[Finding]:
        service = self._literal(node.args[0]) if node.args else None
        if service is not None:
            yield from self._service_use(node, service, method)

    def _service_use(self, node: ast.Call, asked: str, method: str) -> Iterator[Finding]:
        service = SERVICE_ALIASES.get(asked, asked)
        if service not in SERVICES:
            yield self._finding(
                node, "service-unknown", f"asks for host service {asked!r}, which does not exist", "low"
            )
            return
        needed = _permissions_of(service, method)
        if needed and not needed & set(self.manifest.permissions):  # a wildcard asked is literal (permissions.md)
            yield self._finding(
                node,
                "service-undeclared",
                f"uses host service {asked!r} but plugin.yaml permissions ask for none of {', '.join(sorted(needed))}",
            )


def _permissions_of(service: str, method: str) -> set[str]:
    """The permissions that would let a plugin use `service` (its `method`, when known): empty when it needs none."""
    if method and permission_for(service, method) is not None:
        return {permission} if (permission := permission_for(service, method)) else set()
    permissions = [permission_for(service, name) for name in methods_of(service)]
    return {permission for permission in permissions if permission} if all(permissions) else set()


def _is_get_service(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Attribute) and node.func.attr == "get_service")
        or (isinstance(node.func, ast.Name) and node.func.id == "get_service")
    )


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _writes_mode(node: ast.Call, mode_index: int = 1) -> bool:
    """Whether an open()'s mode (positional or `mode=`) writes; a computed mode counts as writing."""
    mode: ast.expr | None = node.args[mode_index] if len(node.args) > mode_index else None
    for keyword in node.keywords:
        if keyword.arg == "mode":
            mode = keyword.value
    if mode is None:
        return False
    if isinstance(mode, ast.Constant) and isinstance(mode.value, str):
        return any(flag in mode.value for flag in "wax+")
    return True


def _writable(path: str) -> bool:
    if not path.startswith("/"):
        return False
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = normal[1:]
    return normal in HARMLESS_PATHS or any(normal == root or normal.startswith(f"{root}/") for root in WRITABLE_ROOTS)
