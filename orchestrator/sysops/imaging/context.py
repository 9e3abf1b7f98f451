"""What of a plugin directory goes to the engine, and the streamed tar that carries it.

A plugin directory is untrusted input: a cloned repository may hold `x -> /etc/shadow`, a 1 GB data
file, a FIFO, or a `.venv` full of links to the host's Python. This module decides which entries ship
(ignore rules: built-in caches and editor files, the plugin's `.dockerignore` and `.gitignore`), refuses
what must not ship (links that leave the directory or lead nowhere, devices, FIFOs, sockets), keeps
links that stay inside as links, and opens files only through `O_NOFOLLOW` descriptors, component by
component, so that no file is ever read through a link. A file is written only if it is still the file
(device and inode) that the listing checked: the plugin's owner may swap the directory, or a file in it,
for a link or a hard link to a host file between the two. A hard link to a file of another owner is
refused (root runs the build and could read it; the directory's owner perhaps not). The context is
written as a tar to a private temporary directory and hashed while it is written: no file, and not the
context, is ever held whole in memory. `sysops plugin up --watch` uses the same rules to decide which
changes matter.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, BinaryIO, Literal

import pathspec

from sysops.core.names import shown
from sysops.errors import PluginDefinitionError
from sysops.private_paths import ensure_private_dir

IGNORED_NAMES = {".git", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".DS_Store"}
IGNORED_SUFFIXES = (".pyc", ".pyo", ".swp", ".swx", "~", ".tmp")
IGNORE_FILES = (".dockerignore", ".gitignore")
#: Shipped (and watched) even when an ignore rule matches them: the build reads them from the directory.
ALWAYS_SHIPPED = frozenset({"plugin.yaml", "pyproject.toml", "requirements.txt", *IGNORE_FILES})
_MAX_PLUGIN_TEXT_BYTES = 1 << 20
#: Patterns per ignore file: each shipped path is matched against every one of them.
MAX_IGNORE_PATTERNS = 2000
_COPY_BUFFER = 1 << 20
_NO_FOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_SPECIAL_KINDS = {stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket", stat.S_IFCHR: "device", stat.S_IFBLK: "device"}
_REFUSED_HINT = "remove it, or list it in the plugin's .dockerignore"
#: A context directory this old was left by a killed `sysops` (a build never lasts this long).
_STALE_CONTEXT_SECONDS = 24 * 3600


def _pattern_factory() -> Callable[[str], pathspec.Pattern]:
    # pathspec >= 1.0 names the per-line git pattern "gitignore" and deprecates "gitwildmatch".
    try:
        return pathspec.lookup_pattern("gitignore")
    except KeyError:
        return pathspec.lookup_pattern("gitwildmatch")


def named(plugin_dir: Path, relative: PurePosixPath) -> str:
    """A plugin path for a one-line message: absolute, control characters escaped."""
    return shown(str(plugin_dir / relative), 300)[1:-1]


def open_plugin_file(plugin_dir: Path, relative: PurePosixPath, identity: tuple[int, int] | None = None) -> BinaryIO:
    """Open a regular file of the plugin without following any link on the way; refuse anything else, and
    (with `identity`, the device and inode the listing saw) a file that is no longer the one listed."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        directory = os.open(plugin_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in relative.parts[:-1]:
                inner = os.open(part, flags, dir_fd=directory)
                os.close(directory)
                directory = inner
            descriptor = os.open(relative.name, _NO_FOLLOW | os.O_NONBLOCK, dir_fd=directory)
        finally:
            os.close(directory)
    except OSError as exc:
        raise PluginDefinitionError(
            f"{named(plugin_dir, relative)}: cannot read: {exc.strerror or exc} (a symbolic link is not followed here)",
            hint="make it a regular file inside the plugin directory, or list it in .dockerignore",
        ) from None
    status = os.fstat(descriptor)  # before fdopen, which raises IsADirectoryError for a directory
    if not stat.S_ISREG(status.st_mode):
        os.close(descriptor)
        raise PluginDefinitionError(f"{named(plugin_dir, relative)}: not a regular file", hint=_REFUSED_HINT)
    if identity is not None and (status.st_dev, status.st_ino) != identity:
        os.close(descriptor)
        raise PluginDefinitionError(
            f"{named(plugin_dir, relative)}: changed while the image context was written (another file is there now)",
            hint="run `sysops plugin up` again once nothing changes the plugin directory",
        )
    return os.fdopen(descriptor, "rb")


def read_small_plugin_text(plugin_dir: Path, relative: PurePosixPath) -> str:
    """A small text file of the plugin (ignore files, requirements): UTF-8 of at most 1 MiB, read without
    following a link, or one line saying why not."""
    with open_plugin_file(plugin_dir, relative) as handle:
        data = handle.read(_MAX_PLUGIN_TEXT_BYTES + 1)
    if len(data) > _MAX_PLUGIN_TEXT_BYTES:
        raise PluginDefinitionError(f"{named(plugin_dir, relative)}: larger than 1 MiB", hint="shorten the file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PluginDefinitionError(f"{named(plugin_dir, relative)}: not UTF-8 text", hint="save it as UTF-8") from None


def _read_ignore_file(plugin_dir: Path, name: str) -> list[str]:
    """The lines of an ignore file; refused beyond `MAX_IGNORE_PATTERNS` patterns (every path of the plugin is
    matched against each: 45,000 patterns took 8 s to load and 14 ms per file)."""
    if not os.path.lexists(plugin_dir / name):
        return []
    lines = read_small_plugin_text(plugin_dir, PurePosixPath(name)).splitlines()
    patterns = sum(1 for line in lines if line.strip() and not line.lstrip().startswith("#"))
    if patterns > MAX_IGNORE_PATTERNS:
        raise PluginDefinitionError(
            f"{named(plugin_dir, PurePosixPath(name))}: {patterns} patterns, more than {MAX_IGNORE_PATTERNS}",
            hint="shorten it (a directory pattern such as `data/` covers everything below it)",
        )
    return lines


def _docker_patterns(lines: list[str]) -> list[str]:
    """`.dockerignore` lines as root-anchored git patterns (Docker matches from the context's root)."""
    patterns = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        cleaned = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        if cleaned not in ("", "."):
            patterns.append(f"{'!' if negated else ''}/{cleaned}")
    return patterns


@dataclass(frozen=True)
class IgnoreRules:
    """Which paths of one plugin directory never reach the engine (nor trigger a reload)."""

    gitignore: pathspec.PathSpec[pathspec.Pattern]
    dockerignore: pathspec.PathSpec[pathspec.Pattern]

    @classmethod
    def load(cls, plugin_dir: Path) -> IgnoreRules:
        """The built-in rules plus the plugin's top-level `.gitignore` and `.dockerignore`."""
        return cls(
            gitignore=pathspec.GitIgnoreSpec.from_lines(_read_ignore_file(plugin_dir, ".gitignore")),
            dockerignore=pathspec.PathSpec.from_lines(
                _pattern_factory(), _docker_patterns(_read_ignore_file(plugin_dir, ".dockerignore"))
            ),
        )

    def ignores(self, relative: PurePosixPath, *, is_dir: bool = False) -> bool:
        """Say whether this path (relative to the plugin directory) is left out."""
        if not relative.parts or relative.as_posix() in ALWAYS_SHIPPED:
            return False
        name = relative.name
        if any(part in IGNORED_NAMES for part in relative.parts) or name.endswith(IGNORED_SUFFIXES):
            return True
        if name.startswith(".#"):
            return True
        text = relative.as_posix() + ("/" if is_dir else "")
        return bool(self.gitignore.match_file(text) or self.dockerignore.match_file(text))

    def ignores_within(self, relative: PurePosixPath) -> bool:
        """Say whether this path or one of its parent directories is left out."""
        parents = [parent for parent in reversed(relative.parents) if parent.parts]
        return any(self.ignores(parent, is_dir=True) for parent in parents) or self.ignores(relative)


@dataclass(frozen=True)
class PluginEntry:
    """One shipped path of a plugin: a directory, a regular file, or a link kept as a link."""

    relative: PurePosixPath
    kind: Literal["dir", "file", "link"]
    link_target: str = ""
    #: A file's device and inode when it was listed: only that file is written to the context.
    identity: tuple[int, int] | None = None


def _checked_link(plugin_dir: Path, relative: PurePosixPath) -> PluginEntry:
    """A link that stays inside the plugin directory, or one line saying why it cannot ship."""
    path = plugin_dir / relative
    target = os.readlink(path)
    lexical = os.path.normpath(os.path.join(relative.parent.as_posix(), target))
    resolved = Path(os.path.realpath(path))
    leaves = os.path.isabs(target) or lexical == ".." or lexical.startswith("../")
    if leaves or not resolved.is_relative_to(plugin_dir):
        raise PluginDefinitionError(
            f"{named(plugin_dir, relative)}: symbolic link to {shown(target, 120)} leads outside the plugin directory",
            hint=f"copy what it points to into the plugin directory, or {_REFUSED_HINT}",
        )
    if not resolved.exists():
        raise PluginDefinitionError(
            f"{named(plugin_dir, relative)}: symbolic link to {shown(target, 120)} points to nothing",
            hint=_REFUSED_HINT,
        )
    return PluginEntry(relative, "link", target)


def _checked_file(plugin_dir: Path, relative: PurePosixPath, status: os.stat_result, owner: int) -> PluginEntry:
    """A regular file that may ship, or one line saying why not (a hard link to a file of another owner)."""
    if status.st_nlink > 1 and status.st_uid != owner:
        raise PluginDefinitionError(
            f"{named(plugin_dir, relative)}: a hard link to a file of another owner (uid {status.st_uid}, "
            f"the plugin directory's is {owner}) cannot be shipped in a plugin image",
            hint=f"copy the file into the plugin directory instead, or {_REFUSED_HINT}",
        )
    return PluginEntry(relative, "file", identity=(status.st_dev, status.st_ino))


def plugin_entries(plugin_dir: Path, rules: IgnoreRules) -> list[PluginEntry]:
    """Every shipped path of a plugin directory (sorted), refusing links out, dangling links, specials and
    hard links to files of another owner."""
    entries: list[PluginEntry] = []
    try:
        owner = os.stat(plugin_dir).st_uid
    except OSError as exc:
        raise PluginDefinitionError(f"{named(plugin_dir, PurePosixPath())}: cannot read: {exc.strerror}") from None
    pending = [PurePosixPath()]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(plugin_dir / directory) as scan:
                children = sorted(scan, key=lambda child: child.name)
        except OSError as exc:
            raise PluginDefinitionError(
                f"{named(plugin_dir, directory)}: cannot list: {exc.strerror or exc}", hint="make it readable"
            ) from None
        for child in children:
            relative = directory / child.name
            is_dir = child.is_dir(follow_symlinks=False)
            if rules.ignores(relative, is_dir=is_dir):
                continue
            if child.is_symlink():
                entries.append(_checked_link(plugin_dir, relative))
            elif is_dir:
                entries.append(PluginEntry(relative, "dir"))
                pending.append(relative)
            elif child.is_file(follow_symlinks=False):
                entries.append(_checked_file(plugin_dir, relative, child.stat(follow_symlinks=False), owner))
            else:
                kind = _SPECIAL_KINDS.get(stat.S_IFMT(child.stat(follow_symlinks=False).st_mode), "special file")
                raise PluginDefinitionError(
                    f"{named(plugin_dir, relative)}: a {kind} cannot be shipped in a plugin image", hint=_REFUSED_HINT
                )
    return sorted(entries, key=lambda entry: entry.relative.parts)


class _HashingSink(io.RawIOBase):
    """Writes to a file and hashes what it writes, so the fingerprint needs no second read."""

    def __init__(self, target: IO[bytes], seed: bytes) -> None:
        super().__init__()
        self.target = target
        self.digest = hashlib.sha256(seed)
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.target.write(data)
        self.digest.update(data)
        self.written += len(data)
        return len(data)

    def tell(self) -> int:
        return self.written


@dataclass(frozen=True)
class BuildContext:
    """A build context written as a tar in a private temporary directory, and its fingerprint.

    Use it as a context manager (or call `close`): the directory is removed afterwards.
    """

    tar_path: Path
    fingerprint: str
    requirements: list[str]
    #: What of the plugin directory ships (all of it, though a development-mode context carries plugin.yaml only).
    entries: list[PluginEntry] = field(default_factory=list)

    def close(self) -> None:
        """Remove the temporary directory holding the tar."""
        shutil.rmtree(self.tar_path.parent, ignore_errors=True)

    def __enter__(self) -> BuildContext:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _remove_stale_contexts(work_dir: Path) -> None:
    """Remove the contexts that a `sysops` killed mid-build (SIGKILL runs no cleanup) left behind."""
    for entry in work_dir.glob("context-*"):
        try:
            status = entry.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(status.st_mode) and time.time() - status.st_mtime > _STALE_CONTEXT_SECONDS:
            shutil.rmtree(entry, ignore_errors=True)


class ContextArchive:
    """A deterministic tar (mtime 0, root-owned) streamed to a temporary file while it is hashed."""

    def __init__(self, work_dir: Path, seed: bytes) -> None:
        for directory in (work_dir.parent, work_dir):  # the cache directory and its contexts are private
            ensure_private_dir(directory)
        _remove_stale_contexts(work_dir)
        self.directory = Path(tempfile.mkdtemp(prefix="context-", dir=work_dir))
        self.path = self.directory / "context.tar"
        self._file = open(self.path, "xb")  # noqa: SIM115 - closed in finish()/discard()
        self._sink = _HashingSink(self._file, seed)
        self._tar = tarfile.TarFile(fileobj=self._sink, mode="w", format=tarfile.GNU_FORMAT, copybufsize=_COPY_BUFFER)

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Add a small generated file (the Dockerfile, the requirement list)."""
        self.add_stream(name, io.BytesIO(data), len(data), mode)

    def add_stream(self, name: str, source: IO[bytes], size: int, mode: int = 0o644) -> None:
        """Add `size` bytes read from `source` in chunks."""
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, mode, 0
        self._tar.addfile(info, source)

    def add_plugin_tree(self, plugin_dir: Path, entries: list[PluginEntry], prefix: str) -> None:
        """Add the plugin's entries under `prefix`; links as links, files streamed without following links."""
        for entry in entries:
            info = tarfile.TarInfo(f"{prefix}{entry.relative.as_posix()}")
            info.mtime = 0
            if entry.kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                self._tar.addfile(info)
            elif entry.kind == "link":
                info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, entry.link_target
                self._tar.addfile(info)
            else:
                self._add_plugin_file(plugin_dir, entry, info)

    def _add_plugin_file(self, plugin_dir: Path, entry: PluginEntry, info: tarfile.TarInfo) -> None:
        relative = entry.relative
        with open_plugin_file(plugin_dir, relative, entry.identity) as handle:
            status = os.fstat(handle.fileno())
            info.size, info.mode = status.st_size, 0o755 if status.st_mode & 0o111 else 0o644
            try:
                self._tar.addfile(info, handle)
            except OSError as exc:
                raise PluginDefinitionError(
                    f"{named(plugin_dir, relative)}: changed while the image context was written ({exc})",
                    hint="run `sysops plugin up` again",
                ) from None

    def finish(self, requirements: list[str], entries: list[PluginEntry] | None = None) -> BuildContext:
        """Close the tar and return the context; the caller removes it (BuildContext.close)."""
        self._tar.close()
        self._file.close()
        return BuildContext(self.path, self._sink.digest.hexdigest(), requirements, entries or [])

    def discard(self) -> None:
        """Drop a half-written context."""
        self._file.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def shipped_files(entries: list[PluginEntry]) -> Iterator[PurePosixPath]:
    """The regular files among a plugin's shipped entries."""
    return (entry.relative for entry in entries if entry.kind == "file")
