"""Plugin dependency resolution: which plugin versions to run, under which keys, in which order (issue 11).

Plugins declare `requires` (other plugins, with PEP 440 version ranges) and `conflicts` (plugins that must not
run beside them). Before anything starts, `plan` decides every version that must run for a root plugin to start,
the store key each one runs under and the order to bring them up; `dependents` says which running plugins need
one that is about to go down; `unmet` is the host's last check before it starts a plugin. This module is pure
(no engine, no store): callers give it candidates and it answers or raises one `DependencyError`.

Rules (docs/dependencies.md explains them for users):
- Resolution is resolvelib's backtracking over the candidates the installation knows; within a range the newest
  usable version is chosen. Of two known candidates with the same name and version, the first in `known` wins.
- Running plugins are pinned: a plan never changes the version of a running plugin, except the root, which may
  roll to a new version; the running plugins that required the version it replaces must still be satisfied.
- Side by side (cargo's rule): each major version of a plugin is its own resolver identifier, so within one major
  there is one version. A requirement that a running plugin (or the root) satisfies is served by it; otherwise by
  the newest major that has a usable known version matching it; only when no plan exists that way is an older
  major tried. So `b: a<2` and `c: a>=2` get `a 1.x` and `a 2.x` side by side.
- Keys: the version under the plain name keeps it; another major runs under `NAME--vMAJOR` (`side_by_side_key`).
  Of new versions of several majors, the newest takes the plain name if it is free. The root rolls the running
  version of its own major (under that one's key); when only other majors of it run, it takes the plain name
  over unless a running plugin still needs the version there (then it runs side by side).
- Conflicts (`conflicts: ["a>=3"]`) hold both ways, against running plugins and within the plan: a known version
  that conflicts with a running plugin or the root is never chosen, and two versions that conflict are never
  chosen together (a conflict is a resolver constraint, met by the absence of a matching version). Versions of one
  plugin never conflict with each other.
- Cycles are refused with the cycle named ("dependency cycle: a 1.0 requires b, b 1.0 requires a").
- Errors name the chain from the root in readable lines, one per failure, joined by "; " in one DependencyError:
  "e 1.0 requires b, b 2.0 requires a>=3, but a 2.1 is running and no other known version of a matches (known:
  1.0, 2.1)", "c 1.4 conflicts with a>=3, but a 3.0 is running".
- Pre-releases count as versions like any other (a range matches them).
- Bounded: at most `_MAX_ROUNDS` rounds per resolution and `_MAX_SECONDS` for the whole plan; past either the
  plan is refused ("too many combinations to resolve").
- Steps come in dependency order: requirements before their dependents (so the root last), ties by key.
- `dependents`: a running plugin depends on a key when one of its requirements is served only by that key (or by
  keys going down with it); the order to take them down puts each before what it needs.
"""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from resolvelib import AbstractProvider, BaseReporter, ResolutionImpossible, ResolutionTooDeep, Resolver
from resolvelib.structs import RequirementInformation

from sysops.core.manifest import SIDE_BY_SIDE_MARK, Manifest
from sysops.core.names import is_plugin_name, shown
from sysops.errors import DependencyError, ManifestError

_REQUIREMENT_TEXT = re.compile(r"\s*([a-z0-9][-a-z0-9]*)\s*(.*?)\s*")
#: Resolution rounds before giving up (each round pins one identifier or backtracks).
_MAX_ROUNDS = 2000
#: Seconds a plan may take, over all its resolutions (each failed one binds a requirement to an older major and
#: starts again): a catalog written to hurt is refused instead of hanging `plugin up`.
_MAX_SECONDS = 10.0


class _OutOfTime(Exception):
    """The plan's time budget ran out."""


@dataclass(frozen=True)
class Requirement:
    """A plugin name with a version range: `monitoring>=1.0` (the range may be empty: any version)."""

    name: str
    specifier: SpecifierSet = field(default_factory=SpecifierSet)

    def __str__(self) -> str:
        return f"{self.name}{self.specifier}"

    def matches(self, candidate: Candidate) -> bool:
        """Whether `candidate` is this plugin in this range."""
        return candidate.name == self.name and self.specifier.contains(candidate.version, prereleases=True)


@dataclass(frozen=True)
class Candidate:
    """One version of a plugin the installation knows (or runs), with what it requires and conflicts with."""

    name: str
    version: Version
    requires: tuple[Requirement, ...]
    conflicts: tuple[Requirement, ...]
    origin: str  # "running as KEY" | "revision N" | "directory PATH" | "package DIST"
    running_key: str = ""  # the store key it runs under when running ("a" or "a--v1")

    def __str__(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def major(self) -> int:
        """The major version: side-by-side versions differ in it."""
        return self.version.major


@dataclass(frozen=True)
class Step:
    """One plugin of a plan: keep it (already running with this version) or start it under `key`."""

    candidate: Candidate
    key: str  # store key to run it under: the name, or "name--vMAJOR" for a side-by-side version
    action: Literal["keep", "start"]


def parse_requirement(text: str) -> Requirement:
    """`"monitoring>=1.0"` -> Requirement("monitoring", SpecifierSet(">=1.0")); ManifestError when malformed."""
    match = _REQUIREMENT_TEXT.fullmatch(text)
    if not match or not is_plugin_name(match.group(1)):
        raise ManifestError(f"requirement {shown(text)} must be a plugin name with an optional range, like 'a>=1.0'")
    try:
        return Requirement(match.group(1), SpecifierSet(match.group(2)))
    except InvalidSpecifier:
        raise ManifestError(f"requirement {shown(text)} has an invalid version range") from None


def side_by_side_key(name: str, major: int) -> str:
    """The store key of a side-by-side major version: `side_by_side_key("a", 1) == "a--v1"`."""
    return f"{name}{SIDE_BY_SIDE_MARK}v{major}"


def plugin_name_of(key: str) -> str:
    """The plugin name of a store key: `plugin_name_of("a--v1") == plugin_name_of("a") == "a"`."""
    return key.partition(SIDE_BY_SIDE_MARK)[0]


def candidate_from_manifest(manifest: Manifest, origin: str, running_key: str = "") -> Candidate:
    """The candidate a manifest describes (`origin` says where it comes from, e.g. "directory ./a")."""
    return Candidate(
        name=manifest.name,
        version=Version(manifest.version),
        requires=tuple(parse_requirement(text) for text in manifest.requires),
        conflicts=tuple(parse_requirement(text) for text in manifest.conflicts),
        origin=origin,
        running_key=running_key,
    )


@dataclass(frozen=True)
class _Clash:
    """`owner` conflicts with `rule`, which `other` matches."""

    owner: Candidate
    rule: Requirement
    other: Candidate


def _clashes(candidate: Candidate, others: Iterable[Candidate]) -> list[_Clash]:
    """Each conflict between `candidate` and one of `others`, either way (versions of one name never clash)."""
    found: list[_Clash] = []
    for other in others:
        if other.name != candidate.name:
            found.extend(_Clash(candidate, rule, other) for rule in candidate.conflicts if rule.matches(other))
            found.extend(_Clash(other, rule, candidate) for rule in other.conflicts if rule.matches(candidate))
    return found


def _conflict_lines(candidate: Candidate, running: Iterable[Candidate]) -> list[str]:
    """Each conflict between `candidate` and a running plugin, either way, as one readable line."""
    return [
        f"{clash.owner} conflicts with {clash.rule}, but {clash.other} is running"
        if clash.owner is candidate
        else f"{clash.owner} is running and conflicts with {clash.rule}"
        for clash in _clashes(candidate, running)
    ]


def unmet(candidate: Candidate, running: Sequence[Candidate]) -> list[str]:
    """What keeps `candidate` from starting now beside `running` (host-side check): each requirement no running
    plugin satisfies, each conflict either way; one readable line each ("b 2.0 requires a>=3, but a 2.1 is running").

    Running versions of the candidate's own name are ignored for conflicts (it replaces or joins them).
    """
    lines = []
    for requirement in candidate.requires:
        if any(requirement.matches(plugin) for plugin in running):
            continue
        present = sorted((plugin for plugin in running if plugin.name == requirement.name), key=lambda c: c.version)
        if present:
            shown_versions = " and ".join(str(plugin) for plugin in present)
            lines.append(f"{candidate} requires {requirement}, but {shown_versions} {_is_are(present)} running")
        else:
            lines.append(f"{candidate} requires {requirement}, but no {requirement.name} is running")
    lines.extend(_conflict_lines(candidate, running))
    return lines


def _is_are(items: Sequence[object]) -> str:
    return "is" if len(items) == 1 else "are"


def dependents(key: str, running: Sequence[Candidate]) -> list[Candidate]:
    """Running plugins that need the plugin running under `key` (directly or through others), in the order
    to take them down (the furthest dependent first); a requirement another running key also satisfies does not count.
    """
    if not any(plugin.running_key == key for plugin in running):
        return []
    gone = {key}
    changed = True
    while changed:
        changed = False
        for plugin in running:
            if plugin.running_key not in gone and _needed_keys(plugin, gone, running):
                gone.add(plugin.running_key)
                changed = True
    found = {
        plugin.running_key: plugin for plugin in running if plugin.running_key in gone and plugin.running_key != key
    }
    needs = {name: _needed_keys(plugin, gone, running) & set(found) for name, plugin in found.items()}
    # A group of dependents that need each other (a cycle) goes down together, in name order, once every
    # dependent outside it that needs one of them is down (Kahn's order over the groups, names breaking ties).
    reach = {name: _reachable(name, needs) for name in found}
    group_of = {name: frozenset({name} | {other for other in reach[name] if name in reach[other]}) for name in found}
    groups = set(group_of.values())
    users = {
        group: {group_of[user] for user in found if needs[user] & group and group_of[user] != group} for group in groups
    }
    order: list[Candidate] = []
    ready = [(min(group), group) for group in groups if not users[group]]
    heapq.heapify(ready)
    while ready:
        _, group = heapq.heappop(ready)
        order.extend(found[name] for name in sorted(group))
        for other in groups:
            if group in users[other]:
                users[other].discard(group)
                if not users[other]:
                    heapq.heappush(ready, (min(other), other))
    return order


def _reachable(start: str, needs: Mapping[str, set[str]]) -> set[str]:
    """The dependents `start` needs, directly or through others."""
    seen: set[str] = set()
    stack = list(needs[start])
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(needs[current])
    return seen


def _needed_keys(plugin: Candidate, gone: set[str], running: Sequence[Candidate]) -> set[str]:
    """The keys in `gone` that `plugin` needs: they serve one of its requirements that nothing outside `gone` serves."""
    needed: set[str] = set()
    for requirement in plugin.requires:
        serving = [other for other in running if other is not plugin and requirement.matches(other)]
        if serving and all(other.running_key in gone for other in serving):
            needed.update(other.running_key for other in serving)
    return needed


# --- plan -------------------------------------------------------------------------------------------------------

#: A resolver identifier: a plugin name and a major version (None: no usable version matches the requirement).
_Identifier = tuple[str, int | None]


@dataclass(frozen=True)
class _Absent:
    """The resolver's choice "no version of this identifier runs": what serves an identifier only conflicts name."""

    identifier: _Identifier


_Choice = Candidate | _Absent


@dataclass(frozen=True)
class _Need:
    """A requirement (or, `conflict`, a conflict) as the resolver sees it: bound to the major version it concerns,
    with the candidate that asks (None: the plan's root)."""

    requirement: Requirement
    identifier: _Identifier
    parent: Candidate | None
    conflict: bool = False

    def accepts(self, choice: _Choice) -> bool:
        """A requirement wants a matching version; a conflict wants no version or one outside its range."""
        if isinstance(choice, _Absent):
            return self.conflict
        return self.requirement.matches(choice) != self.conflict

    def __str__(self) -> str:
        who = str(self.parent) if self.parent is not None else "the plan"
        return f"{who} {'conflicts with' if self.conflict else 'requires'} {self.requirement}"


class _Catalog:
    """The candidates of one plan: the fixed ones (the root and the running plugins it does not replace), which
    keep their identifiers, and the known ones usable beside them."""

    def __init__(self, root: Candidate, known: Sequence[Candidate], running: Sequence[Candidate]) -> None:
        self.root = root
        self.running = _unique_by_key(running)
        self.known = _unique_by_version([root, *known, *self.running])
        self.replaced = self._replaced_by_root()
        self.fixed = [root, *(plugin for plugin in self.running if plugin is not self.replaced)]
        self.pinned: dict[_Identifier, Candidate] = {}
        for plugin in reversed(self.fixed):  # the root wins its identifier
            self.pinned[(plugin.name, plugin.major)] = plugin
        #: The newest major a requirement may bind to, lowered when no plan exists with the newer one.
        self.caps: dict[Requirement, int] = {}

    def _replaced_by_root(self) -> Candidate | None:
        """The running version the root rolls, if any (see the module's rules)."""
        same_name = [plugin for plugin in self.running if plugin.name == self.root.name]
        for plugin in same_name:
            if plugin.major == self.root.major:
                return plugin
        holder = next((plugin for plugin in same_name if plugin.running_key == self.root.name), None)
        if holder is None or self._still_needed(holder):
            return None
        return holder

    def _still_needed(self, holder: Candidate) -> bool:
        """Whether a running plugin needs `holder` for a requirement the root does not satisfy."""
        others = [plugin for plugin in self.running if plugin is not holder]
        return any(
            requirement.matches(holder)
            and not requirement.matches(self.root)
            and not any(requirement.matches(other) for other in others)
            for plugin in others
            for requirement in plugin.requires
        )

    def usable(self, identifier: _Identifier) -> list[Candidate]:
        """The candidates that may serve `identifier`, newest first."""
        if identifier in self.pinned:
            return [self.pinned[identifier]]
        name, major = identifier
        return sorted(
            (
                plugin
                for plugin in self.known
                if plugin.name == name
                and plugin.major == major
                and plugin is not self.replaced
                and not _clashes(plugin, self.fixed)
            ),
            key=lambda plugin: plugin.version,
            reverse=True,
        )

    def identifier_for(self, requirement: Requirement) -> _Identifier:
        """The major version that serves `requirement` (cargo's rule, see the module's rules)."""
        fixed = [plugin for plugin in self.fixed if requirement.matches(plugin)]
        if fixed:
            return (requirement.name, max(fixed, key=lambda plugin: plugin.version).major)
        cap = self.caps.get(requirement)
        for major in self.majors(requirement.name):
            if cap is not None and major > cap:
                continue
            if any(requirement.matches(plugin) for plugin in self.usable((requirement.name, major))):
                return (requirement.name, major)
        return (requirement.name, None)

    def majors(self, name: str) -> list[int]:
        """The major versions of `name` that the catalog holds, newest first."""
        return sorted({plugin.major for plugin in self.known if plugin.name == name}, reverse=True)

    def needs_of(self, candidate: Candidate) -> list[_Need]:
        """What `candidate` asks of the resolver: each requirement, and each conflict for every major it touches."""
        needs = [_Need(requirement, self.identifier_for(requirement), candidate) for requirement in candidate.requires]
        for rule in candidate.conflicts:
            touched = {plugin.major for plugin in self.known if rule.matches(plugin)}
            needs.extend(_Need(rule, (rule.name, major), candidate, conflict=True) for major in sorted(touched))
        return needs


def _unique_by_key(running: Sequence[Candidate]) -> list[Candidate]:
    seen: dict[str, Candidate] = {}
    for plugin in running:
        seen.setdefault(plugin.running_key or plugin.name, plugin)
    return list(seen.values())


def _unique_by_version(candidates: Iterable[Candidate]) -> list[Candidate]:
    seen: dict[tuple[str, Version], Candidate] = {}
    for plugin in candidates:
        seen.setdefault((plugin.name, plugin.version), plugin)
    return list(seen.values())


class _Provider(AbstractProvider[_Need, _Choice, _Identifier]):
    """resolvelib's view of a `_Catalog`."""

    def __init__(self, catalog: _Catalog, deadline: float) -> None:
        self.catalog = catalog
        self.deadline = deadline

    def _in_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise _OutOfTime

    def identify(self, requirement_or_candidate: _Need | _Choice) -> _Identifier:
        if isinstance(requirement_or_candidate, _Need | _Absent):
            return requirement_or_candidate.identifier
        return (requirement_or_candidate.name, requirement_or_candidate.major)

    def get_preference(
        self,
        identifier: _Identifier,
        resolutions: Mapping[_Identifier, _Choice],
        candidates: Mapping[_Identifier, Iterator[_Choice]],
        information: Mapping[_Identifier, Iterator[RequirementInformation[_Need, _Choice]]],
        backtrack_causes: Sequence[RequirementInformation[_Need, _Choice]],
    ) -> tuple[bool, bool, str, int]:
        # Fixed identifiers first (they cannot move), then required ones before those only conflicts name,
        # then by name: a deterministic order.
        only_conflicts = all(info.requirement.conflict for info in information[identifier])
        return (identifier not in self.catalog.pinned, only_conflicts, identifier[0], _major_order(identifier))

    def find_matches(
        self,
        identifier: _Identifier,
        requirements: Mapping[_Identifier, Iterator[_Need]],
        incompatibilities: Mapping[_Identifier, Iterator[_Choice]],
    ) -> list[_Choice]:
        self._in_time()
        needs = list(requirements.get(identifier, ()))
        excluded = list(incompatibilities.get(identifier, ()))
        if all(need.conflict for need in needs):
            choices: list[_Choice] = [_Absent(identifier)]
        else:
            choices = list(self.catalog.usable(identifier))
        return [choice for choice in choices if choice not in excluded and all(need.accepts(choice) for need in needs)]

    def is_satisfied_by(self, requirement: _Need, candidate: _Choice) -> bool:
        return requirement.accepts(candidate)

    def get_dependencies(self, candidate: _Choice) -> list[_Need]:
        self._in_time()
        return [] if isinstance(candidate, _Absent) else self.catalog.needs_of(candidate)


def _major_order(identifier: _Identifier) -> int:
    return -1 if identifier[1] is None else identifier[1]


class _Chains(BaseReporter[_Need, _Choice, _Identifier]):
    """Records which requirement first brought in each identifier, to name the chain in errors."""

    def __init__(self) -> None:
        self.first: dict[_Identifier, _Need] = {}

    def adding_requirement(self, requirement: _Need, parent: _Choice | None) -> None:
        if not requirement.conflict:
            self.first.setdefault(requirement.identifier, requirement)

    def chain_to(self, candidate: Candidate | None) -> list[_Need]:
        """The requirements from the root down to `candidate`, root first."""
        chain: list[_Need] = []
        while candidate is not None:
            need = self.first.get((candidate.name, candidate.major))
            if need is None or need.parent is None or need in chain:
                break
            chain.append(need)
            candidate = need.parent
        return chain[::-1]


def plan(root: Candidate, known: Sequence[Candidate], running: Sequence[Candidate]) -> list[Step]:
    """Steps in dependency order (requirements first, root last). Raises DependencyError with the chain."""
    catalog = _Catalog(root, known, running)
    # What certainly fails is said at once: the root's conflicts and its requirements nothing known can serve.
    problems = _conflict_lines(root, [plugin for plugin in catalog.fixed if plugin is not root])
    problems += [
        _explain_one(catalog, need.identifier, [need])
        for need in catalog.needs_of(root)
        if not need.conflict and need.identifier[1] is None
    ]
    if problems:
        raise DependencyError("; ".join(problems))
    chosen = _resolve(catalog)
    problems = _broken_by_roll(catalog, chosen.values())
    if problems:
        raise DependencyError("; ".join(problems))
    keys = _assign_keys(catalog, chosen.values())
    return [
        Step(plugin, keys[plugin], "keep" if plugin.running_key and keys[plugin] == plugin.running_key else "start")
        for plugin in _dependency_order(catalog, chosen, keys)
    ]


def _resolve(catalog: _Catalog) -> dict[_Identifier, Candidate]:
    """The candidate chosen for each identifier the root needs. When there is none, a requirement the resolver
    could not serve is bound to an older major that has a matching version and the resolution is tried again;
    when no older major is left, DependencyError says why the first (newest) attempt failed."""
    root = catalog.root
    first_failure: list[str] = []
    deadline = time.monotonic() + _MAX_SECONDS
    while True:
        chains = _Chains()
        resolver: Resolver[_Need, _Choice, _Identifier] = Resolver(_Provider(catalog, deadline), chains)
        try:
            result = resolver.resolve([_Need(Requirement(root.name), (root.name, root.major), None)], _MAX_ROUNDS)
        except ResolutionImpossible as impossible:
            causes: Collection[RequirementInformation[_Need, _Choice]] = impossible.causes
            first_failure = first_failure or _explain(catalog, chains, causes)
            failed = sorted((cause.requirement for cause in causes), key=lambda need: (str(need), need.conflict))
            # The failed requirements first, then those that brought in who asked, nearest first.
            suspects = [*failed, *(need for cause in failed for need in reversed(chains.chain_to(cause.parent)))]
            if not _bind_to_an_older_major(catalog, suspects):
                raise DependencyError("; ".join(first_failure)) from None
        except (ResolutionTooDeep, _OutOfTime):
            raise DependencyError(f"the requirements of {root} have too many combinations to resolve") from None
        else:
            pinned = {
                identifier: choice for identifier, choice in result.mapping.items() if isinstance(choice, Candidate)
            }
            return _required_from_root(catalog, pinned)


def _required_from_root(catalog: _Catalog, pinned: Mapping[_Identifier, Candidate]) -> dict[_Identifier, Candidate]:
    """The pins the root needs through requirements (a pin only a conflict still names is left out)."""
    needed: dict[_Identifier, Candidate] = {}
    todo = [catalog.root]
    while todo:
        plugin = todo.pop()
        identifier = (plugin.name, plugin.major)
        if identifier not in needed:
            needed[identifier] = plugin
            todo.extend(pinned[served] for served in map(catalog.identifier_for, plugin.requires) if served in pinned)
    return needed


def _bind_to_an_older_major(catalog: _Catalog, needs: Iterable[_Need]) -> bool:
    """Lower the cap of the first of `needs` that an older major can serve."""
    for need in needs:
        major = need.identifier[1]
        if need.conflict or major is None or catalog.identifier_for(need.requirement) != need.identifier:
            continue
        previous = catalog.caps.get(need.requirement)
        catalog.caps[need.requirement] = major - 1
        if catalog.identifier_for(need.requirement)[1] not in (None, major):  # (a running plugin keeps serving it)
            return True
        if previous is None:
            del catalog.caps[need.requirement]
        else:
            catalog.caps[need.requirement] = previous
    return False


def _assign_keys(catalog: _Catalog, chosen: Iterable[Candidate]) -> dict[Candidate, str]:
    """The store key of each chosen candidate (see the module's rules)."""
    keys: dict[Candidate, str] = {}
    taken = {plugin.running_key for plugin in catalog.fixed if plugin.running_key}
    root = catalog.root
    if catalog.replaced is not None:
        keys[root] = catalog.replaced.running_key
    elif root.running_key:
        keys[root] = root.running_key
    else:
        keys[root] = root.name if root.name not in taken else side_by_side_key(root.name, root.major)
    taken.add(keys[root])
    for plugin in sorted(chosen, key=lambda plugin: (plugin.name, -plugin.major)):
        if plugin in keys:
            continue
        if plugin.running_key and plugin in catalog.fixed:
            keys[plugin] = plugin.running_key
            continue
        keys[plugin] = plugin.name if plugin.name not in taken else side_by_side_key(plugin.name, plugin.major)
        taken.add(keys[plugin])
    return keys


def _broken_by_roll(catalog: _Catalog, chosen: Iterable[Candidate]) -> list[str]:
    """Requirements of running plugins that the version the root replaces served and nothing else will."""
    replaced = catalog.replaced
    if replaced is None:
        return []
    after = [*catalog.fixed, *chosen]
    return [
        f"{plugin} requires {requirement}, but rolling {replaced.name} from {replaced.version} to "
        f"{catalog.root.version} would leave it unmet"
        for plugin in catalog.fixed
        if plugin is not catalog.root
        for requirement in plugin.requires
        if requirement.matches(replaced) and not any(requirement.matches(other) for other in after)
    ]


def _dependency_order(
    catalog: _Catalog, chosen: Mapping[_Identifier, Candidate], keys: Mapping[Candidate, str]
) -> list[Candidate]:
    """Requirements before dependents, ties by key; a cycle raises DependencyError naming it."""
    edges: dict[Candidate, list[tuple[Requirement, Candidate]]] = {}
    for plugin in chosen.values():
        edges[plugin] = []
        for requirement in plugin.requires:
            served = chosen.get(catalog.identifier_for(requirement))
            if served is not None and served is not plugin:
                edges[plugin].append((requirement, served))
    waiting = {plugin: len({served for _, served in deps}) for plugin, deps in edges.items()}
    users: dict[Candidate, set[Candidate]] = {plugin: set() for plugin in edges}
    for plugin, deps in edges.items():
        for _, served in deps:
            users[served].add(plugin)
    ready = [(keys[plugin], plugin) for plugin, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[Candidate] = []
    while ready:
        _, current = heapq.heappop(ready)
        order.append(current)
        for user in users[current]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, (keys[user], user))
    if len(order) < len(edges):
        raise DependencyError(_cycle_line(edges, [plugin for plugin in edges if plugin not in order], keys))
    return order


def _cycle_line(
    edges: Mapping[Candidate, list[tuple[Requirement, Candidate]]],
    stuck: list[Candidate],
    keys: Mapping[Candidate, str],
) -> str:
    """ "a 1.0 requires b, b 1.0 requires a": one cycle among the candidates that could not be ordered."""
    current = min(stuck, key=lambda plugin: keys[plugin])
    path: list[tuple[Candidate, Requirement]] = []
    seen: dict[Candidate, int] = {}
    while current not in seen:
        seen[current] = len(path)
        requirement, served = min(
            ((requirement, served) for requirement, served in edges[current] if served in stuck),
            key=lambda item: keys[item[1]],
        )
        path.append((current, requirement))
        current = served
    cycle = path[seen[current] :]
    return "dependency cycle: " + ", ".join(f"{plugin} requires {requirement}" for plugin, requirement in cycle)


def _explain(catalog: _Catalog, chains: _Chains, causes: Iterable[RequirementInformation[_Need, _Choice]]) -> list[str]:
    """One readable line per identifier the resolver could not serve, with the chain that asked for it."""
    by_identifier: dict[_Identifier, list[_Need]] = {}
    for cause in causes:
        needs = by_identifier.setdefault(cause.requirement.identifier, [])
        if cause.requirement not in needs:
            needs.append(cause.requirement)
    lines = []
    for identifier, needs in sorted(by_identifier.items(), key=lambda item: (item[0][0], _major_order(item[0]))):
        needs.sort(key=lambda need: need.conflict)
        chain = [str(need) for need in chains.chain_to(needs[0].parent) if need not in needs]
        lines.append(", ".join([*chain, _explain_one(catalog, identifier, needs)]))
    return lines


def _explain_one(catalog: _Catalog, identifier: _Identifier, needs: list[_Need]) -> str:
    """ "b 2.0 requires a>=3, but a 2.1 is running and no other known version of a matches (known: 1.0, 2.1)"."""
    name, major = identifier
    asks = ", ".join(str(need) for need in needs)
    versions = sorted({plugin.version for plugin in catalog.known if plugin.name == name})
    known = f"(known: {', '.join(map(str, versions))})" if versions else f"(no version of {name} is known)"
    matching = [
        plugin
        for plugin in catalog.known
        if plugin.name == name and major in (None, plugin.major) and all(need.accepts(plugin) for need in needs)
    ]
    what = "matches" if len(needs) == 1 else "fits them all"
    if not matching:
        running = [plugin for plugin in catalog.fixed if plugin.name == name and plugin is not catalog.root]
        if running:
            shown_running = " and ".join(str(plugin) for plugin in running)
            return (
                f"{asks}, but {shown_running} {_is_are(running)} running and no other known version of {name} "
                f"{what} {known}"
            )
        return f"{asks}, but no known version of {name} {what} {known}"
    reasons = [_why_unusable(catalog, plugin) for plugin in sorted(matching, key=lambda p: p.version, reverse=True)]
    shown_reasons = ", and ".join(dict.fromkeys(reason for reason in reasons if reason))
    if shown_reasons:
        return f"{asks}, but {shown_reasons} {known}"
    return f"{asks}, but no combination of known versions satisfies every requirement {known}"


def _why_unusable(catalog: _Catalog, plugin: Candidate) -> str:
    """Why the resolver may not choose `plugin` ("" when nothing forbids it by itself)."""
    pinned = catalog.pinned.get((plugin.name, plugin.major))
    if pinned is catalog.root and plugin is not pinned:
        return f"{pinned} is the version being started (not {plugin.version})"
    if pinned is not None and pinned is not plugin:
        return f"{pinned} is running and keeps its version (not {plugin.version})"
    if plugin is catalog.replaced:
        return f"{plugin} is being replaced by {catalog.root}"
    return ", and ".join(_clash_reason(catalog, clash) for clash in _clashes(plugin, catalog.fixed))


def _clash_reason(catalog: _Catalog, clash: _Clash) -> str:
    """ "b 1.0 conflicts with z (z 1.0 is running)", "z 1.0 (running) conflicts with b>=1"."""
    where = "being started" if catalog.root in (clash.owner, clash.other) else "running"
    if clash.owner in catalog.fixed:
        return f"{clash.owner} ({where}) conflicts with {clash.rule}"
    return f"{clash.owner} conflicts with {clash.rule} ({clash.other} is {where})"
