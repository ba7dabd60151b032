"""`shelfwise serve` lifts the open-files soft limit to fit its connection cap."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from shelfwise.cli import _raise_open_files_limit


@pytest.fixture
def limits() -> Iterator[tuple[int, int]]:
    original = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = original[1]
    if hard == resource.RLIM_INFINITY or hard < 1_000:
        pytest.skip(f"needs a finite hard limit of at least 1,000 (it is {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard - 100, hard))  # soft may go down
    yield hard - 100, hard
    resource.setrlimit(resource.RLIMIT_NOFILE, original)


def test_the_soft_limit_is_raised_up_to_the_hard_limit(limits: tuple[int, int]) -> None:
    soft, hard = limits
    _raise_open_files_limit(soft + 1)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft + 1, hard)
    _raise_open_files_limit(hard + 1_000)  # more than allowed: as far as it goes
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    _raise_open_files_limit(10)  # never lowered
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
