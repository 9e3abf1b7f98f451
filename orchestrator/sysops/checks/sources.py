"""The Python files of a plugin directory that static checks read, collected without trusting the directory.

A plugin directory is input written by someone else: it may hold symbolic links out of itself, files too big
to parse in reasonable time, code nested deep enough to exhaust the parser, bytes that are not UTF-8, or
thousands of files. Files are listed without following links, read with O_NOFOLLOW, bounded in size and
count, and parsed here once; whatever cannot be analysed becomes a finding (never an exception), so a
plugin cannot get past the checks by being unreadable.
"""

from __future__ import annotations

import ast
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from sysops.checks.findings import Finding
from sysops.safe_text import escape_controls

#: Largest Python file parsed (bytes); a bigger one is reported unanalysed.
MAX_FILE_BYTES = 2 * 1024 * 1024
#: Most Python files parsed in one plugin; the rest are reported unanalysed.
MAX_FILES = 2000
#: Most bytes of Python parsed in one plugin; files past it are reported unanalysed.
MAX_TOTAL_BYTES = 32 * 1024 * 1024
#: Directories never scanned: caches Python writes and version control, neither shipped as code.
SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".hg", ".svn"})


class Ignores(Protocol):
    """Which paths the build leaves out of the image (imaging's IgnoreRules.ignores): never shipped, never run."""

    def __call__(self, relative: PurePosixPath, *, is_dir: bool = False) -> bool:
        """Say whether `relative` (a directory when `is_dir`) is left out of the image."""
        ...


def _nothing_ignored(relative: PurePosixPath, *, is_dir: bool = False) -> bool:
    return False


@dataclass(frozen=True)
class SourceFile:
    """One parsed Python file: its path relative to the plugin directory, its real path, and its tree."""

    relative: str
    path: Path
    tree: ast.Module


@dataclass
class Sources:
    """The parsed files of a plugin and the findings about files that could not be analysed."""

    files: list[SourceFile] = field(default_factory=list)
    #: Bytes of the files read so far (MAX_TOTAL_BYTES bounds them).
    total_bytes: int = 0
    findings: list[Finding] = field(default_factory=list)


def collect_sources(plugin_dir: Path, ignores: Ignores = _nothing_ignored) -> Sources:
    """Parse every `.py` file under `plugin_dir` that the build ships (what `ignores` leaves in; links not
    followed); unreadable ones become findings."""
    root = plugin_dir.resolve()
    sources = Sources()

    def unlistable(error: OSError) -> None:
        where = Path(error.filename or root).relative_to(root).as_posix() if error.filename else "."
        sources.findings.append(
            _unanalysed(escape_controls(where, one_line=True), f"cannot list: {error.strerror or error}")
        )

    for directory, subdirectories, names in os.walk(root, onerror=unlistable):
        here = PurePosixPath(Path(directory).relative_to(root).as_posix())
        for name in sorted(name for name in subdirectories if os.path.islink(os.path.join(directory, name))):
            if not ignores(here / name):
                _check_link(root, here / name, sources)
        subdirectories[:] = sorted(
            name for name in subdirectories if name not in SKIPPED_DIRS and not ignores(here / name, is_dir=True)
        )
        for name in sorted(names):
            if ignores(here / name):
                continue
            if os.path.islink(os.path.join(directory, name)):
                _check_link(root, here / name, sources)
            elif name.endswith(".py"):
                _add_file(root, here / name, sources)
    return sources


def _check_link(root: Path, relative: PurePosixPath, sources: Sources) -> None:
    """A link inside the directory is scanned as its target; one leading out is reported and not read."""
    path = root / relative
    resolved = Path(os.path.realpath(path))
    if not resolved.is_relative_to(root):
        sources.findings.append(
            Finding(
                shown_name(relative),
                0,
                "symlink-outside",
                "medium",
                "symbolic link leads outside the plugin directory: not analysed (the build refuses it)",
            )
        )


def _add_file(root: Path, relative: PurePosixPath, sources: Sources) -> None:
    name = shown_name(relative)
    if len(sources.files) >= MAX_FILES:
        sources.findings.append(_unanalysed(name, f"more than {MAX_FILES} Python files in the plugin"))
        return
    data = _read_bounded(root / relative)
    if isinstance(data, str):
        sources.findings.append(_unanalysed(name, data))
        return
    sources.total_bytes += len(data)
    if sources.total_bytes > MAX_TOTAL_BYTES:
        sources.findings.append(_unanalysed(name, f"the plugin's Python files pass {MAX_TOTAL_BYTES} bytes in all"))
        return
    try:
        tree = ast.parse(data, filename=name)
    except (SyntaxError, ValueError) as exc:  # ValueError: null bytes; SyntaxError covers bad encodings too
        line = getattr(exc, "lineno", None) or 0
        message = escape_controls(str(getattr(exc, "msg", None) or exc), one_line=True)[:300]
        sources.findings.append(
            Finding(name, int(line), "syntax-error", "low", f"not valid Python, not analysed: {message}")
        )
        return
    except (RecursionError, MemoryError):
        sources.findings.append(_unanalysed(name, "nested too deeply for the parser"))
        return
    sources.files.append(SourceFile(name, root / relative, tree))


def _read_bounded(path: Path) -> bytes | str:
    """The file's bytes, or a reason it was not read (too big, not a regular file, unreadable)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        if info.st_size > MAX_FILE_BYTES:
            return f"{info.st_size} bytes, above the {MAX_FILE_BYTES} bytes the checks parse"
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        return f"grew above the {MAX_FILE_BYTES} bytes the checks parse"
    return data


def shown_name(relative: PurePosixPath) -> str:
    """A file's name as findings show it: control characters, newlines and bytes that are not UTF-8 escaped (a
    file name is the plugin author's text, and reports end up on terminals and in logs)."""
    return escape_controls(relative.as_posix(), one_line=True)


def _unanalysed(name: str, reason: str) -> Finding:
    """A file that could not be analysed: high, since code the checks never read could do anything."""
    return Finding(name, 0, "unanalysed", "high", f"not analysed: {reason}")
