"""Imperfect network paths between the daemon and its clients (tests/netns.py): a link slower than
the stream, a lossy, delaying, reordering link (the userspace relay), and UDP packets larger than
the 1500-byte MTU.

Runs as root with ``ip netns`` (and TUN and tc where used); skips, naming what is missing, elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import netns
import pytest
from netns_scenarios import agrees, big_datagrams, exact, lossy, slow_link

pytestmark = pytest.mark.slow


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[netns.Lab]:
    yield from netns.lab_fixture(tmp_path)


@pytest.fixture
def relay_lab(lab: netns.Lab) -> netns.Lab:
    reason = netns.relay_unavailable()
    if reason is not None:
        pytest.skip(reason)
    return lab


def test_a_client_behind_a_slow_link_is_dropped_per_backlog(lab: netns.Lab) -> None:
    try:
        outcome = slow_link(lab)
    except RuntimeError as error:
        if "tc" in str(error):
            pytest.skip(str(error))
        raise
    victim = outcome.details["victim"]
    assert victim["gaps"] >= 1 and victim["lost"] > 0  # its loss shows in its connection packet numbers
    assert (victim["wrong"], victim["reordered"], victim["duplicates"], victim["repeated_ids"]) == (0, 0, 0, 0)
    assert victim["packets"] + victim["lost"] == victim["last_id"] - victim["first_id"] + 1  # every tick accounted
    for figures in outcome.details["healthy"]:
        assert exact(figures), figures


def test_through_loss_delay_and_reordering(relay_lab: netns.Lab) -> None:
    outcome = lossy(relay_lab)
    found = outcome.details
    assert exact(found["tcp"]), found["tcp"]  # TCP resends what the relay dropped
    assert found["relay"]["to_left"]["dropped"] > 0
    for figures, view in zip(found["udp"], found["expected"], strict=True):
        assert view, "no relay flow carried this client's packets in this order"
        assert figures["lost"] > 0 and figures["reordered"] > 0, figures
        assert agrees(figures, view), (figures, view)  # the client's counts are the relay's, exactly
        assert (figures["wrong"], figures["repeated_ids"]) == (0, 0)
    assert exact(found["healthy"]), found["healthy"]


def test_udp_packets_larger_than_the_mtu(relay_lab: netns.Lab) -> None:
    outcome = big_datagrams(relay_lab)
    found = outcome.details
    (warning,) = found["warnings"]  # once, at start-up
    assert "8229 bytes exceed the 1500-byte MTU" in warning and "6 IP fragments" in warning
    assert exact(found["clean"]), found["clean"]  # fragmented and reassembled: nothing lost on a clean link
    lossy_figures = found["lossy"]
    assert 0.05 <= found["datagram_loss"] <= 0.20, found["datagram_loss"]  # ~1 - 0.98 ** 6 = 11.4 %
    received = set(lossy_figures["numbers"])
    missing = set(range(min(received), max(received) + 1)) - received
    relay_dropped = {n for flow in found["relay"]["udp"].values() for n in flow["dropped"] if n < max(received)}
    assert relay_dropped and relay_dropped <= missing  # each lost first fragment lost its packet
    assert (lossy_figures["wrong"], lossy_figures["reordered"], lossy_figures["duplicates"]) == (0, 0, 0)
    assert exact(found["tcp"]), found["tcp"]
