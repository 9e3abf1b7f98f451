"""SYSOPS_BUS_BACKLOG: the event bus's backlog limit of a running host (services/hosting.py), shrunk by the
integration test of the bus; a value that is not an integer >= 2 is ignored (logged), never fatal."""

from __future__ import annotations

import logging

import pytest
from sysops.services.hosting import BACKLOG_ENV, DEFAULT_BACKLOG, bus_backlog


def test_unset_or_empty_is_the_default() -> None:
    assert bus_backlog({}) == DEFAULT_BACKLOG == 1000
    assert bus_backlog({BACKLOG_ENV: "  "}) == DEFAULT_BACKLOG


def test_an_integer_of_at_least_two_is_the_limit() -> None:
    assert bus_backlog({BACKLOG_ENV: "20"}) == 20
    assert bus_backlog({BACKLOG_ENV: " 2 "}) == 2


@pytest.mark.parametrize("value", ["1", "0", "-5", "ten", "2.5"])
def test_a_bad_value_is_logged_and_the_default_kept(value: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sysops.services"):
        assert bus_backlog({BACKLOG_ENV: value}) == DEFAULT_BACKLOG
    assert BACKLOG_ENV in caplog.text and repr(value) in caplog.text
