"""Read user-supplied YAML and text files (plugin.yaml, policy.yaml, pyproject.toml) within fixed bounds.

`yaml.safe_load` alone is not safe against hostile input: an alias bomb ("billion laughs") expands to
gigabytes once validated or echoed, deep nesting overflows the recursion limit, a second `limits:` key
silently replaces the first, and a 20 MB file takes minutes to parse. This loader refuses, before
anything is built:

- files larger than `MAX_BYTES` (checked while reading, so a file that grows or lies about its size is
  still bounded) and bytes that are not UTF-8;
- more than `MAX_ALIASES` aliases, or a document that would expand to more than `MAX_NODES` nodes
  (counting every alias as the full size of what it names), or nesting deeper than `MAX_DEPTH`;
- a mapping that repeats a key.

Every refusal is a `ValueError` subclass (`InputLimitError`) or a `yaml.YAMLError` whose message is one
line; callers turn it into their own SysopsError naming the file.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from sysops.core.names import shown

#: Largest accepted file: manifests and policies are a few hundred bytes.
MAX_BYTES = 64 * 1024
#: Most aliases (`*name`) in one document.
MAX_ALIASES = 64
#: Most nodes a document may hold once every alias is expanded.
MAX_NODES = 10_000
#: Deepest nesting of mappings and sequences.
MAX_DEPTH = 32
_MERGE_TAG = "tag:yaml.org,2002:merge"


class InputLimitError(ValueError):
    """The input exceeds one of this module's limits, or is not UTF-8; the message is one line."""


def read_text(path: Path, max_bytes: int = MAX_BYTES) -> str:
    """Read a UTF-8 text file of at most `max_bytes`; raise OSError or InputLimitError."""
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputLimitError(f"larger than {max_bytes // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputLimitError(f"not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r})") from None


def check_tree(data: Any, *, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> None:
    """Refuse already-loaded data (e.g. from JSON) bigger or deeper than the YAML limits; iterative."""
    pending: list[tuple[Any, int]] = [(data, 1)]
    seen = 0
    while pending:
        value, depth = pending.pop()
        seen += 1
        if seen > max_nodes:
            raise InputLimitError(f"more than {max_nodes} values")
        if isinstance(value, dict | list) and depth > max_depth:
            raise InputLimitError(f"nested deeper than {max_depth} levels")
        if isinstance(value, dict):
            pending.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)


class _BoundedComposer(Composer):
    """Counts aliases, expanded nodes and depth while composing, before any Python object exists."""

    def __init__(self) -> None:
        super().__init__()
        self._aliases = 0
        self._depth = 0
        self._weights: dict[int, int] = {}

    def _refuse(self, what: str) -> InputLimitError:
        return InputLimitError(f"{what} (line {self.peek_event().start_mark.line + 1})")  # type: ignore[attr-defined]

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):  # type: ignore[attr-defined]
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise self._refuse(f"more than {MAX_ALIASES} aliases")
        return super().compose_node(parent, index)

    def _weigh(self, node: Node, children: list[Node]) -> None:
        weight = 1 + sum(self._weights.get(id(child), 1) for child in children)
        if weight > MAX_NODES:
            raise InputLimitError(f"expands to more than {MAX_NODES} values (line {node.start_mark.line + 1})")
        self._weights[id(node)] = weight

    def _compose_collection(self, compose: Any, anchor: Any) -> Any:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise self._refuse(f"nested deeper than {MAX_DEPTH} levels")
        node = compose(self, anchor)
        self._depth -= 1
        children = [item for pair in node.value for item in pair] if isinstance(node, MappingNode) else node.value
        self._weigh(node, list(children))
        return node

    def compose_sequence_node(self, anchor: Any) -> SequenceNode:
        node: SequenceNode = self._compose_collection(Composer.compose_sequence_node, anchor)
        return node

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        node: MappingNode = self._compose_collection(Composer.compose_mapping_node, anchor)
        return node


class BoundedSafeLoader(Reader, Scanner, Parser, _BoundedComposer, SafeConstructor, Resolver):
    """`yaml.SafeLoader` with the limits of this module and duplicate mapping keys refused."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        _BoundedComposer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        """Build a mapping, refusing a key that appears twice (merge keys `<<` may still override)."""
        if isinstance(node, MappingNode):
            seen: set[object] = set()
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                    continue
                key = self.construct_object(key_node, deep=False)
                if key in seen:
                    raise ConstructorError(None, None, f"duplicate key {shown(key)}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """Parse one YAML document within the limits; raise yaml.YAMLError or InputLimitError (one-line messages)."""
    loader = BoundedSafeLoader(text)
    try:
        return loader.get_single_data()
    except InputLimitError:
        raise
    except (ValueError, OverflowError, RecursionError, IndexError) as exc:
        # Constructors raise these for values such as a 5000-digit integer, a date like 2020-13-45 or an
        # empty `!!int` (PyYAML indexes its first character).
        raise InputLimitError(f"a value cannot be read: {shown(str(exc), 80)}") from None
    finally:
        loader.dispose()


def describe_yaml_error(error: yaml.YAMLError) -> str:
    """One line for a YAML syntax error: its line number and problem."""
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark else ""
    problem = getattr(error, "problem", None) or str(error)
    return f"not valid YAML{where}: {' '.join(str(problem).split())[:120]}"
