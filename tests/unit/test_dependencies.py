"""The dependency resolution core (sysops.core.dependencies): plans, dependents and the host's unmet check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from sysops.core.dependencies import (
    Candidate,
    Requirement,
    Step,
    candidate_from_manifest,
    dependents,
    parse_requirement,
    plan,
    plugin_name_of,
    side_by_side_key,
    unmet,
)
from sysops.core.manifest import parse_manifest
from sysops.errors import DependencyError, ExitCode, ManifestError


def plugin(
    name: str, version: str, requires: Sequence[str] = (), conflicts: Sequence[str] = (), running_as: str = ""
) -> Candidate:
    return Candidate(
        name=name,
        version=Version(version),
        requires=tuple(parse_requirement(text) for text in requires),
        conflicts=tuple(parse_requirement(text) for text in conflicts),
        origin=f"running as {running_as}" if running_as else f"directory ./{name}-{version}",
        running_key=running_as,
    )


def shown(steps: list[Step]) -> list[tuple[str, str, str]]:
    return [(step.key, str(step.candidate.version), step.action) for step in steps]


def refusal(root: Candidate, known: Sequence[Candidate] = (), running: Sequence[Candidate] = ()) -> str:
    with pytest.raises(DependencyError) as raised:
        plan(root, known, running)
    assert raised.value.exit_code == ExitCode.CONFLICT
    return str(raised.value)


# --- the small pieces ---------------------------------------------------------------------------------------------


def test_requirement_parses_and_prints() -> None:
    requirement = parse_requirement("monitoring>=1.0")
    assert requirement == Requirement("monitoring", SpecifierSet(">=1.0"))
    assert str(requirement) == "monitoring>=1.0"
    assert str(parse_requirement(" a ")) == "a"
    assert parse_requirement("a >=1, <2").specifier == SpecifierSet(">=1,<2")


@pytest.mark.parametrize("text", ["", "Bad_Name>=1", "a>=one", "a=>1"])
def test_malformed_requirement_is_one_clear_error(text: str) -> None:
    with pytest.raises(ManifestError, match="requirement"):
        parse_requirement(text)


def test_side_by_side_keys() -> None:
    assert side_by_side_key("a", 1) == "a--v1"
    assert plugin_name_of("a--v1") == "a"
    assert plugin_name_of("a") == "a"


def test_candidate_from_manifest() -> None:
    manifest = parse_manifest(
        {"name": "b", "version": "2.0.1", "entrypoint": "b.plugin:B", "requires": ["a>=1"], "conflicts": ["c<2"]},
        "plugin.yaml",
    )
    candidate = candidate_from_manifest(manifest, "revision 3", running_key="b")
    assert candidate == Candidate(
        "b", Version("2.0.1"), (parse_requirement("a>=1"),), (parse_requirement("c<2"),), "revision 3", "b"
    )


# --- plan: order, ranges, diamonds, cycles ------------------------------------------------------------------------


def test_a_chain_starts_requirements_first() -> None:
    steps = plan(plugin("c", "1.0", ["b"]), [plugin("b", "1.0", ["a"]), plugin("a", "1.0")], [])
    assert shown(steps) == [("a", "1.0", "start"), ("b", "1.0", "start"), ("c", "1.0", "start")]


def test_the_newest_version_in_range_is_chosen() -> None:
    known = [plugin("a", version) for version in ("1.0", "1.5", "1.9.1", "2.0")]
    steps = plan(plugin("b", "1.0", ["a>=1.2,<2"]), known, [])
    assert shown(steps)[0] == ("a", "1.9.1", "start")


def test_a_diamond_shares_one_version_that_fits_both_sides() -> None:
    known = [
        plugin("b", "1.0", ["a>=1.1"]),
        plugin("c", "1.0", ["a<1.5"]),
        *(plugin("a", version) for version in ("1.0", "1.2", "1.4", "1.6")),
    ]
    steps = plan(plugin("d", "1.0", ["c", "b"]), known, [])
    assert shown(steps) == [
        ("a", "1.4", "start"),
        ("b", "1.0", "start"),
        ("c", "1.0", "start"),
        ("d", "1.0", "start"),
    ]


def test_ties_are_ordered_by_key_and_dependents_wait_for_all_their_requirements() -> None:
    known = [plugin("z", "1.0"), plugin("m", "1.0", ["z"]), plugin("b", "1.0")]
    steps = plan(plugin("root", "1.0", ["m", "b"]), known, [])
    assert [step.key for step in steps] == ["b", "z", "m", "root"]


def test_a_running_requirement_is_kept_not_started() -> None:
    running = [plugin("a", "1.2", running_as="a")]
    steps = plan(plugin("b", "1.0", ["a>=1"]), [plugin("a", "1.9")], running)
    assert shown(steps) == [("a", "1.2", "keep"), ("b", "1.0", "start")]
    assert steps[0].candidate is running[0]


@pytest.mark.parametrize(
    ("known", "expected"),
    [
        ([plugin("b", "1.0", ["a"])], "dependency cycle: a 1.0 requires b, b 1.0 requires a"),
        (
            [plugin("b", "1.0", ["c>=1"]), plugin("c", "1.0", ["a"])],
            "dependency cycle: a 1.0 requires b, b 1.0 requires c>=1, c 1.0 requires a",
        ),
    ],
)
def test_a_cycle_is_refused_and_named(known: list[Candidate], expected: str) -> None:
    assert refusal(plugin("a", "1.0", ["b"]), known) == expected


# --- plan: what cannot be met -------------------------------------------------------------------------------------


def test_a_missing_requirement_names_the_chain() -> None:
    known = [plugin("d", "1.0", ["x>=2"]), plugin("x", "1.0"), plugin("x", "1.5")]
    assert refusal(plugin("e", "1.0", ["d"]), known) == (
        "e 1.0 requires d, d 1.0 requires x>=2, but no known version of x matches (known: 1.0, 1.5)"
    )
    assert (
        refusal(plugin("e", "1.0", ["y"]))
        == "e 1.0 requires y, but no known version of y matches (no version of y is known)"
    )


def test_every_unmet_requirement_is_one_line() -> None:
    message = refusal(plugin("e", "1.0", ["x>=2", "y"]), [plugin("x", "1.0")])
    assert message.split("; ") == [
        "e 1.0 requires x>=2, but no known version of x matches (known: 1.0)",
        "e 1.0 requires y, but no known version of y matches (no version of y is known)",
    ]


def test_a_running_plugin_keeps_its_version() -> None:
    running = [plugin("a", "2.1", running_as="a")]
    assert refusal(plugin("b", "2.0", ["a>=3"]), [plugin("a", "1.0")], running) == (
        "b 2.0 requires a>=3, but a 2.1 is running and no other known version of a matches (known: 1.0, 2.1)"
    )
    assert refusal(plugin("b", "2.0", ["a>=2.2"]), [plugin("a", "2.3")], running) == (
        "b 2.0 requires a>=2.2, but a 2.1 is running and keeps its version (not 2.3) (known: 2.1, 2.3)"
    )


def test_the_root_may_roll_but_its_running_dependents_must_still_hold() -> None:
    running = [plugin("a", "1.4", running_as="a"), plugin("b", "1.0", ["a<1.5"], running_as="b")]
    assert refusal(plugin("a", "1.6"), [], running) == (
        "b 1.0 requires a<1.5, but rolling a from 1.4 to 1.6 would leave it unmet"
    )
    assert shown(plan(plugin("a", "1.3"), [], running)) == [("a", "1.3", "start")]


# --- plan: conflicts ----------------------------------------------------------------------------------------------


def test_a_conflict_with_a_running_plugin_is_refused_both_ways() -> None:
    running = [plugin("a", "3.0", running_as="a")]
    assert (
        refusal(plugin("c", "1.4", conflicts=["a>=3"]), [], running)
        == "c 1.4 conflicts with a>=3, but a 3.0 is running"
    )
    running = [plugin("c", "1.4", conflicts=["a>=3"], running_as="c")]
    assert refusal(plugin("a", "3.0"), [], running) == "c 1.4 is running and conflicts with a>=3"
    assert shown(plan(plugin("a", "2.9"), [], running)) == [("a", "2.9", "start")]


def test_a_known_version_that_conflicts_with_a_running_plugin_is_passed_over() -> None:
    running = [plugin("z", "1.0", conflicts=["a>=1.9"], running_as="z")]
    known = [plugin("a", "1.9"), plugin("a", "1.8", conflicts=["z<2"]), plugin("a", "1.7")]
    assert shown(plan(plugin("b", "1.0", ["a"]), known, running)) == [("a", "1.7", "start"), ("b", "1.0", "start")]
    assert refusal(plugin("b", "1.0", ["a>=1.8"]), known, running) == (
        "b 1.0 requires a>=1.8, but z 1.0 (running) conflicts with a>=1.9, and a 1.8 conflicts with z<2 "
        "(z 1.0 is running) (known: 1.7, 1.8, 1.9)"
    )


def test_a_conflict_within_the_plan_steers_the_choice() -> None:
    known = [plugin("c", "1.4", conflicts=["a>=2.5"]), plugin("a", "2.0"), plugin("a", "2.6")]
    steps = plan(plugin("d", "1.0", ["a", "c"]), known, [])
    assert shown(steps)[0] == ("a", "2.0", "start")


def test_a_conflict_within_the_plan_that_cannot_be_avoided_is_named() -> None:
    known = [plugin("c", "1.4", conflicts=["a>=3"]), plugin("a", "3.0"), plugin("a", "3.1")]
    message = refusal(plugin("d", "1.0", ["a", "c"]), known)
    assert "c 1.4 conflicts with a>=3" in message
    assert (
        message
        == "d 1.0 requires a, c 1.4 conflicts with a>=3, but no known version of a fits them all (known: 3.0, 3.1)"
    )


def test_an_older_major_serves_when_the_newest_cannot() -> None:
    known = [plugin("c", "1.4", conflicts=["a>=3"]), plugin("a", "2.0"), plugin("a", "3.0")]
    assert shown(plan(plugin("d", "1.0", ["a", "c"]), known, []))[0] == ("a", "2.0", "start")
    known = [plugin("a", "2.0", ["x"]), plugin("a", "1.2"), plugin("a", "1.1")]
    assert shown(plan(plugin("b", "1.0", ["a"]), known, [])) == [("a", "1.2", "start"), ("b", "1.0", "start")]
    known = [plugin("a", "2.0", ["x"]), plugin("a", "1.2", ["x>=2"]), plugin("x", "1.0", ["y"])]
    assert refusal(plugin("b", "1.0", ["a"]), known) == (
        "b 1.0 requires a, a 2.0 requires x, x 1.0 requires y, but no known version of y matches "
        "(no version of y is known)"
    )


# --- plan: side by side -------------------------------------------------------------------------------------------


def test_incompatible_ranges_run_two_majors_side_by_side() -> None:
    known = [
        plugin("b", "1.0", ["a<2"]),
        plugin("c", "1.0", ["a>=2"]),
        *(plugin("a", version) for version in ("1.0", "1.1", "2.0", "2.1")),
    ]
    steps = plan(plugin("d", "1.0", ["b", "c"]), known, [])
    assert shown(steps) == [
        ("a", "2.1", "start"),
        ("a--v1", "1.1", "start"),
        ("b", "1.0", "start"),
        ("c", "1.0", "start"),
        ("d", "1.0", "start"),
    ]


def test_a_new_major_beside_a_running_one_gets_the_side_by_side_key() -> None:
    running = [plugin("a", "2.1", running_as="a")]
    steps = plan(plugin("b", "1.0", ["a<2"]), [plugin("a", "1.0")], running)
    assert shown(steps) == [("a--v1", "1.0", "start"), ("b", "1.0", "start")]


def test_a_requirement_a_running_version_satisfies_starts_nothing_new() -> None:
    running = [plugin("a", "1.5", running_as="a")]
    steps = plan(plugin("b", "1.0", ["a>=1"]), [plugin("a", "2.0")], running)
    assert shown(steps) == [("a", "1.5", "keep"), ("b", "1.0", "start")]


def test_the_root_takes_over_the_plain_name_unless_a_running_plugin_needs_the_old_major() -> None:
    old = plugin("a", "1.4", running_as="a")
    assert shown(plan(plugin("a", "2.0"), [], [old])) == [("a", "2.0", "start")]
    running = [old, plugin("b", "1.0", ["a<2"], running_as="b")]
    assert shown(plan(plugin("a", "2.0"), [], running)) == [("a--v2", "2.0", "start")]


# --- dependents ---------------------------------------------------------------------------------------------------


def test_dependents_come_furthest_first() -> None:
    running = [
        plugin("a", "1.0", running_as="a"),
        plugin("b", "1.0", ["a"], running_as="b"),
        plugin("c", "1.0", ["b"], running_as="c"),
        plugin("d", "1.0", ["c", "a"], running_as="d"),
        plugin("e", "1.0", running_as="e"),
    ]
    assert [candidate.name for candidate in dependents("a", running)] == ["d", "c", "b"]
    assert [candidate.name for candidate in dependents("c", running)] == ["d"]
    assert dependents("e", running) == []
    assert dependents("nothing", running) == []


def test_dependents_that_need_each_other_go_down_before_what_they_need() -> None:
    """b--v2 needs c, c needs any b: the two are a cycle that needs b, so they go before b (hypothesis found
    b first, which the cycle's fallback took in name order)."""
    running = [
        plugin("a", "1.0", running_as="a"),
        plugin("b", "1.0", ["a"], running_as="b"),
        plugin("b", "2.0", ["a", "c"], running_as="b--v2"),
        plugin("c", "1.0", ["b"], running_as="c"),
    ]
    assert [candidate.running_key for candidate in dependents("a", running)] == ["b--v2", "c", "b"]


def test_a_requirement_another_running_key_satisfies_does_not_count() -> None:
    running = [
        plugin("a", "2.1", running_as="a"),
        plugin("a", "1.5", running_as="a--v1"),
        plugin("b", "1.0", ["a>=1"], running_as="b"),
        plugin("c", "1.0", ["a<2"], running_as="c"),
    ]
    assert [candidate.name for candidate in dependents("a--v1", running)] == ["c"]
    assert [candidate.name for candidate in dependents("a", running)] == []


# --- unmet --------------------------------------------------------------------------------------------------------


def test_unmet_says_each_missing_requirement_and_conflict_in_one_line() -> None:
    candidate = plugin("b", "2.0", ["a>=3", "m", "z"], conflicts=["x"])
    running = [
        plugin("a", "2.1", running_as="a"),
        plugin("z", "1.0", running_as="z"),
        plugin("x", "1.0", running_as="x"),
        plugin("y", "1.0", conflicts=["b>=2"], running_as="y"),
    ]
    assert unmet(candidate, running) == [
        "b 2.0 requires a>=3, but a 2.1 is running",
        "b 2.0 requires m, but no m is running",
        "b 2.0 conflicts with x, but x 1.0 is running",
        "y 1.0 is running and conflicts with b>=2",
    ]
    assert unmet(candidate, [plugin("a", "3.0", running_as="a"), plugin("m", "1", running_as="m"), running[1]]) == []


# --- a property: every plan meets every requirement and holds no conflict -----------------------------------------

_NAMES = ("a", "b", "c", "d")
_VERSIONS = ("1.0", "1.5", "2.0", "2.5", "3.0")
_RANGES = ("", ">=1.5", "<2", ">=2", "==1.5", "<3,>=2")
_requires = st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from(_RANGES)), max_size=2)
_conflicts = st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from(_RANGES)), max_size=1)


@st.composite
def situations(draw: st.DrawFn) -> tuple[Candidate, list[Candidate], list[Candidate]]:
    def one(name: str, version: str, running_as: str = "") -> Candidate:
        requires = [f"{other}{spec}" for other, spec in draw(_requires) if other != name]
        conflicts = [f"{other}{spec}" for other, spec in draw(_conflicts) if other != name]
        return plugin(name, version, requires, conflicts, running_as)

    known = [one(name, version) for name in _NAMES for version in _VERSIONS if draw(st.booleans())]
    running: list[Candidate] = []
    for name in _NAMES:
        majors = draw(st.lists(st.sampled_from(_VERSIONS), max_size=2, unique_by=lambda v: Version(v).major))
        for index, version in enumerate(majors):
            key = name if index == 0 else side_by_side_key(name, Version(version).major)
            running.append(one(name, version, running_as=key))
    name = draw(st.sampled_from(_NAMES))
    required = draw(st.lists(st.sampled_from([other for other in _NAMES if other != name]), min_size=1, max_size=3))
    root = one(name, draw(st.sampled_from(_VERSIONS)))
    return replace(root, requires=(*root.requires, *(Requirement(other) for other in required))), known, running


@settings(max_examples=300, deadline=None)
@given(situations())
def test_every_plan_meets_every_requirement_and_holds_no_conflict(
    situation: tuple[Candidate, list[Candidate], list[Candidate]],
) -> None:
    root, known, running = situation
    try:
        steps = plan(root, known, running)
    except DependencyError as error:
        assert str(error)
        return
    started = {step.key: step.candidate for step in steps if step.action == "start"}
    staying = [p for p in running if p.running_key not in started]  # running plugins the plan does not replace
    after = [*staying, *started.values()]
    assert steps[-1].candidate == root
    assert len({step.key for step in steps}) == len(steps)
    for position, step in enumerate(steps):
        candidate = step.candidate
        assert plugin_name_of(step.key) == candidate.name
        assert step.key in (candidate.name, side_by_side_key(candidate.name, candidate.major))
        if step.action == "keep":
            assert candidate in running and step.key == candidate.running_key
            continue
        if candidate != root:  # running plugins are pinned: only the root replaces one, one version per major
            assert step.key not in {p.running_key for p in running}
            assert (candidate.name, candidate.major) not in {(p.name, p.major) for p in staying}
        earlier = [s.candidate for s in steps[:position]]
        for requirement in candidate.requires:
            assert any(requirement.matches(p) for p in after), (step, requirement)
            if not any(requirement.matches(p) for p in staying):
                assert any(requirement.matches(p) for p in earlier), (step, requirement)
        for other in after:
            if other.name != candidate.name:
                assert not any(rule.matches(other) for rule in candidate.conflicts), (step, other)
                assert not any(rule.matches(candidate) for rule in other.conflicts), (step, other)


@st.composite
def running_sets(draw: st.DrawFn) -> list[Candidate]:
    running: list[Candidate] = []
    for name in _NAMES:
        majors = draw(st.lists(st.sampled_from(_VERSIONS), max_size=2, unique_by=lambda v: Version(v).major))
        for index, version in enumerate(majors):
            requires = [f"{other}{spec}" for other, spec in draw(_requires) if other != name]
            key = name if index == 0 else side_by_side_key(name, Version(version).major)
            running.append(plugin(name, version, requires, running_as=key))
    return running


@settings(max_examples=300, deadline=None)
@given(running_sets(), st.sampled_from(_NAMES))
def test_taking_dependents_down_in_order_leaves_nothing_that_was_met_unmet(running: list[Candidate], name: str) -> None:
    going = dependents(name, running)
    removed = {name, *(candidate.running_key for candidate in going)}
    remaining = [p for p in running if p.running_key not in removed]

    def met(requirement: Requirement, owner: Candidate, among: list[Candidate]) -> bool:
        return any(requirement.matches(p) for p in among if p is not owner)

    for candidate in remaining:
        for requirement in candidate.requires:
            assert met(requirement, candidate, remaining) or not met(requirement, candidate, running)

    def needs(user: Candidate, used: Candidate) -> bool:
        return any(r.matches(used) and not met(r, user, remaining) for r in user.requires)

    reaches = {(user.running_key, used.running_key) for user in going for used in going if needs(user, used)}
    for _ in going:  # the transitive closure
        reaches |= {(a, d) for a, b in reaches for c, d in reaches if b == c}
    for index, candidate in enumerate(going):
        # Each needed the key: a requirement it had met goes away with it.
        assert any(met(r, candidate, running) and not met(r, candidate, remaining) for r in candidate.requires)
        for later in going[index + 1 :]:  # still up when `candidate` goes: it does not need it (but in a cycle)
            mutual = (candidate.running_key, later.running_key) in reaches
            assert mutual or (later.running_key, candidate.running_key) not in reaches, (candidate, later)
