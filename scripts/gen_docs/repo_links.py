"""mkdocs hook: a link from a docs page to a repository file outside docs/ becomes that file's path.

The pages are read on a code host too, where `[the chart's README](../charts/sysops/README.md)` opens the
file; the site has no copy of it, and strict mode would count the link as broken. So, on the site only,
such a link is shown as the path (`charts/sysops/README.md`) beside its text. A link to something that
exists nowhere is left alone, for strict mode to report. Fenced code blocks are not touched.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"

_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]+)\]\((?P<target>[^)\s]+)\)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def repo_path(page_uri: str, target: str) -> str | None:
    """The repository-relative path a page's link points to, when that is an existing file outside docs/."""
    if "://" in target or target.startswith(("#", "mailto:", "/")):
        return None
    path_part = target.split("#", 1)[0]
    if not path_part:
        return None
    resolved = ((DOCS / page_uri).parent / path_part).resolve()
    if resolved.is_relative_to(DOCS) or not resolved.is_relative_to(REPO) or not resolved.exists():
        return None
    return resolved.relative_to(REPO).as_posix() + ("/" if resolved.is_dir() else "")


def _rewrite(match: re.Match[str], page_uri: str) -> str:
    path = repo_path(page_uri, match["target"])
    if path is None:
        return match.group(0)
    text = match["text"]
    if text.strip("`").rstrip("/") in (path.rstrip("/"), path.rstrip("/").rsplit("/", 1)[-1]):
        return f"`{path}`"
    return f"{text} (`{path}`)"


def rewrite_markdown(markdown: str, page_uri: str) -> str:
    """The page with its links to repository files outside docs/ shown as paths."""
    lines, in_fence = [], False
    for line in markdown.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        lines.append(line if in_fence else _LINK.sub(lambda match: _rewrite(match, page_uri), line))
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """mkdocs event: rewrite each page's Markdown before it is rendered."""
    return rewrite_markdown(markdown, page.file.src_uri)
