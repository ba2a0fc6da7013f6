"""Fixtures shared by the unit tests of the loops on in-memory fakes (tests/unit/fakes.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from tests.unit.fakes import FakeNet


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test (several neurons' worth of work share two cores), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def net(tmp_path) -> FakeNet:
    """uid 0 the owner, 1 alice (the lead validator), 2 bob and 3 charlie (miners). A module may define its own."""
    net = FakeNet(tmp_path)
    net.add("owner", owner=True)
    net.add("alice", stake=10_000.0, permit=True)
    net.add("bob")
    net.add("charlie")
    return net
