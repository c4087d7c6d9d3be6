"""The daemon on a real interface (tests/netns.py): bound to one namespace address, ``[server] allow``
admits the allowed network and refuses another, and a data port takes only its control
connection's host.

Runs as root with ``ip netns``; skips, naming what is missing, elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import netns
import pytest
from netns_scenarios import exact, exposure

pytestmark = pytest.mark.slow


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[netns.Lab]:
    yield from netns.lab_fixture(tmp_path)


def test_allow_list_and_data_ports_on_a_real_interface(lab: netns.Lab) -> None:
    found = exposure(lab).details
    assert exact(found["owner"]) and found["owner"]["packets"] >= 50
    assert found["office"]  # refused: closed before any reply
    assert "Connection refused" in found["unbound"]  # nothing listens on the server's other addresses
    assert found["thief"] == "closed at once"
    refusals = found["refusals"]
    assert any("refused a control connection from 10.200.2.2: not in the allowed networks" in r for r in refusals)
    assert any("refused a data connection from 10.200.3.2: this port belongs to 10.200.1.2" in r for r in refusals)
