"""``TiAStream`` across a 5 s network partition and across a server restart (tests/netns.py).

Runs as root with ``ip netns``; skips, naming what is missing, elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import netns
import pytest
from netns_scenarios import exact, partition, restart

pytestmark = pytest.mark.slow


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[netns.Lab]:
    yield from netns.lab_fixture(tmp_path)


def test_a_partition_is_reported_as_its_exact_gap(lab: netns.Lab) -> None:
    found = partition(lab).details
    again = found["again"]  # dataTimeout 2 s: a new session after the partition
    (resume,) = again["resumes"]
    assert resume["ticks_lost"] == resume["first_id"] - resume["last_id"] - 1 > 0
    assert again["packets"] + resume["ticks_lost"] == again["last_id"] - again["first_id"] + 1
    assert (again["wrong"], again["repeated_ids"], again["lost"], again["duplicates"]) == (0, 0, 0, 0)
    rides = found["rides"]  # the default dataTimeout: the same connections, the server's drops as one gap
    assert rides["resumes"] == [] and rides["gaps"] >= 1 and rides["lost"] > 0
    assert rides["packets"] + rides["lost"] == rides["last_id"] - rides["first_id"] + 1
    assert (rides["wrong"], rides["repeated_ids"], rides["duplicates"]) == (0, 0, 0)
    assert exact(found["healthy"]), found["healthy"]


def test_a_server_restart_is_reconnected_without_repeats(lab: netns.Lab) -> None:
    found = restart(lab).details
    final = found["final"]
    (resume,) = final["resumes"]
    assert resume["first_id"] < resume["last_id"]  # the new server counts from 0 again
    assert 0 < resume["seconds"] < found["downtime"] + 5  # the wall-clock time lost, not ids
    assert "ServerStateShutdown" in found["states"]
    assert (final["wrong"], final["repeated_ids"], final["gaps"], final["lost"]) == (0, 0, 0, 0)
