"""A client that vanishes from a real network path (tests/netns.py): noticed and dropped within
``peer_timeout`` (20 s by default), logged once, its slot free again, the others untouched.

Runs as root with ``ip netns``; skips, naming what is missing, elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import netns
import pytest
from netns_scenarios import exact, vanished

pytestmark = pytest.mark.slow


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[netns.Lab]:
    yield from netns.lab_fixture(tmp_path)


def test_vanished_clients_are_dropped_within_the_default_peer_timeout(lab: netns.Lab) -> None:
    outcome = vanished(lab)
    found = outcome.details
    # what each victim held: control, data and server-state; control and server-state; control and data
    assert found["before"] == {"cable": 3, "quiet": 2, "gone": 2}
    assert found["refused"] == "too many connections (limit 5)"  # the vanished ones held their slots
    for name, seconds in found["detected"].items():
        assert seconds <= 20.0, f"{name}: its connections closed {seconds:.1f} s after the cable was pulled"
    assert found["connections_after"] == {"cable": [], "quiet": [], "gone": []}
    fds_before, fds_detected = found["fds"]
    assert fds_before - fds_detected == 7  # a socket per connection closed, nothing else held
    # one line per vanished streaming client (its data connection), none for the quiet one
    for name, count in (("cable", 1), ("gone", 1), ("quiet", 0)):
        address = found["victims"][name]
        assert sum(f"data client {address}:" in line for line in found["gone_lines"]) == count, found["gone_lines"]
    # the others streamed on, exact; the newcomer took the freed slot at once
    for figures in found["healthy"]:
        assert exact(figures), figures
    assert [f["packets"] >= 20 for f in found["healthy"]] == [True] * 3
