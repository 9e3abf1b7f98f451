"""The plugin indexes this installation trusts, in the order they were added (`$SYSOPS_HOME/indexes.json`).

`sysops index add NAME URL --root FILE --tier T [--token-file F]` records an index here: its name, the base
URL of its TUF repository (metadata under `URL/metadata/`, targets under `URL/targets/`), the trust tier its
plugins get (the operator decides it, never the index) and, for a private index, the path of a file holding
its bearer token (the token itself never enters this file). Each index also owns a private directory
`$SYSOPS_HOME/indexes/<name>/` holding the root metadata trusted at `add` and python-tuf's metadata and
target caches. The file is private (0600) and replaced atomically; order matters: `find` asks the indexes
in it in turn.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sysops.distribution.installs import TIERS
from sysops.errors import NotFoundError, UsageError
from sysops.private_paths import ensure_private_dir, write_private_file

INDEXES_FILE = "indexes.json"
INDEXES_DIR = "indexes"
_FORMAT_VERSION = 1
#: A DNS-1123 label: index names and the plugin names an index lists.
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SCHEMES = ("http", "https", "file")


@dataclass(frozen=True)
class IndexConfig:
    """One configured index: where it is served, the tier of its plugins, and where its token is kept."""

    name: str
    url: str  # base URL of the TUF repository, without a trailing slash
    tier: str  # official | community | private
    token_file: str = ""  # path of a file holding a bearer token ("" for a public index)


def check_index_name(name: str) -> str:
    """`name` when it is a DNS-1123 label (it names a directory); else a UsageError naming it."""
    if not DNS_LABEL.match(name):
        raise UsageError(
            f"index name {name!r} is not valid",
            hint="use lower-case letters, digits and '-', at most 63 characters, starting and ending alphanumeric",
        )
    return name


def check_index_url(url: str) -> str:
    """The URL without a trailing slash when it is http(s)://HOST/... or file:///PATH; else a UsageError."""
    parts = urlsplit(url)
    if "@" in parts.netloc:  # user:token@host would be kept in indexes.json and shown by `index ls` and errors
        shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        raise UsageError(
            f"index URL {shown!r} carries credentials (user or token before '@')",
            hint="give the URL without them and the token with --token-file FILE (a 0600 file)",
        )
    if parts.scheme not in _SCHEMES or (parts.scheme != "file" and not parts.hostname) or parts.query:
        raise UsageError(
            f"index URL {url!r} is not valid", hint="give http(s)://HOST/PATH or file:///PATH of the index repository"
        )
    return url.rstrip("/")


def check_tier(tier: str) -> str:
    """`tier` when it is one of the trust tiers; else a UsageError listing them."""
    if tier not in TIERS:
        raise UsageError(f"tier {tier!r} is not known", hint=f"use one of {', '.join(TIERS)}")
    return tier


def indexes_path(home: Path) -> Path:
    """The file listing the configured indexes."""
    return home / INDEXES_FILE


def index_dir(home: Path, name: str) -> Path:
    """The private directory of one index: trusted root, TUF metadata cache, target cache."""
    return home / INDEXES_DIR / check_index_name(name)


def _config_from(item: Any) -> IndexConfig:
    if not isinstance(item, dict):
        raise TypeError("an index entry is not an object")
    config = IndexConfig(
        name=str(item["name"]), url=str(item["url"]), tier=str(item["tier"]), token_file=str(item.get("token_file", ""))
    )
    check_index_name(config.name)
    check_tier(config.tier)
    return config


def load_indexes(home: Path) -> list[IndexConfig]:
    """Every configured index, in the order added; empty when none. A damaged file is refused in one line."""
    path = indexes_path(home)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: cannot be read ({error})", hint="check its owner and mode") from None
    try:
        document = json.loads(text)
        items = document["indexes"]
        if not isinstance(items, list):
            raise TypeError("indexes is not a list")
        return [_config_from(item) for item in items]
    except (ValueError, KeyError, TypeError, UsageError) as error:
        raise UsageError(
            f"{path}: not a valid list of indexes ({error})", hint="fix it, or remove it and `sysops index add` again"
        ) from None


def get_index(home: Path, name: str) -> IndexConfig:
    """The index called `name`; NotFoundError when no such index is configured."""
    for config in load_indexes(home):
        if config.name == name:
            return config
    raise NotFoundError(f"no index named {name!r}", hint="`sysops index ls` lists them")


def _save(home: Path, configs: list[IndexConfig]) -> None:
    ensure_private_dir(home)
    document = {"version": _FORMAT_VERSION, "indexes": [asdict(config) for config in configs]}
    write_private_file(indexes_path(home), json.dumps(document, indent=2) + "\n")


def add_index(home: Path, config: IndexConfig) -> None:
    """Append `config`; a UsageError when an index of that name is already configured."""
    configs = load_indexes(home)
    if any(existing.name == config.name for existing in configs):
        raise UsageError(f"an index named {config.name!r} is already configured", hint="`sysops index remove` it first")
    _save(home, [*configs, config])


def remove_index(home: Path, name: str) -> None:
    """Forget the index `name` and delete its directory (trusted root and caches); NotFoundError if unknown."""
    configs = load_indexes(home)
    get_index(home, name)
    _save(home, [config for config in configs if config.name != name])
    shutil.rmtree(index_dir(home, name), ignore_errors=True)
