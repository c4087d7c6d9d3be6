"""``PacketSequence``: gaps, late and repeated connection packet numbers, as both clients count them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tia.client.sequence import HORIZON, Arrival, PacketSequence


def arrivals(numbers: list[int]) -> tuple[list[Arrival], PacketSequence]:
    sequence = PacketSequence()
    return [sequence.check(n) for n in numbers], sequence


def test_in_order_from_any_baseline() -> None:
    seen, sequence = arrivals([7, 8, 9])
    assert seen == [Arrival.NEXT] * 3
    assert (sequence.received, sequence.gaps, sequence.lost, sequence.expected) == (3, 0, 0, 10)


def test_a_jump_is_a_gap_until_the_missing_ones_arrive() -> None:
    seen, sequence = arrivals([0, 4, 2, 1, 3, 5])
    assert seen == [Arrival.NEXT, Arrival.GAP, Arrival.LATE, Arrival.LATE, Arrival.LATE, Arrival.NEXT]
    assert (sequence.received, sequence.gaps, sequence.lost, sequence.reordered) == (6, 1, 0, 3)
    assert sequence.describe() == "6 packets, 1 gaps (0 lost), 3 late, 0 repeated"


def test_repeats_are_told_from_late_packets() -> None:
    seen, sequence = arrivals([0, 2, 2, 1, 1, 0, 3])
    assert seen == [
        Arrival.NEXT, Arrival.GAP, Arrival.DUPLICATE, Arrival.LATE, Arrival.DUPLICATE, Arrival.DUPLICATE, Arrival.NEXT
    ]
    assert (sequence.received, sequence.lost, sequence.reordered, sequence.duplicates) == (4, 0, 1, 3)


def test_missing_numbers_are_forgotten_beyond_the_horizon() -> None:
    sequence = PacketSequence()
    sequence.check(0)
    sequence.check(2)  # 1 missing
    sequence.check(2 + HORIZON)  # 3 .. HORIZON + 1 missing, and 1 now too old to wait for
    assert sequence.check(1) is Arrival.DUPLICATE  # too late to tell from a repeat: dropped
    assert sequence.check(HORIZON) is Arrival.LATE
    assert sequence.lost == HORIZON - 1


def test_a_huge_jump_costs_no_memory() -> None:
    seen, sequence = arrivals([0, 10**15, 10**15 + 1])
    assert seen == [Arrival.NEXT, Arrival.GAP, Arrival.NEXT]
    assert sequence.lost == 10**15 - 1


@given(st.lists(st.integers(0, 60), max_size=200))
def test_counts_match_what_arrived(numbers: list[int]) -> None:
    """Whatever the order: every number is handed out once, the rest counted as lost or repeated.

    The first packet is the baseline: numbers below it were never expected, so they count as repeats.
    """
    seen, sequence = arrivals(numbers)
    delivered = [n for n, arrival in zip(numbers, seen, strict=True) if arrival is not Arrival.DUPLICATE]
    expected = {n for n in numbers if n >= numbers[0]} if numbers else set()
    assert len(delivered) == len(set(delivered)) == sequence.received
    assert set(delivered) == expected
    assert sequence.duplicates == len(numbers) - len(expected)
    assert sequence.lost == (max(numbers) - numbers[0] + 1 - len(expected) if numbers else 0)
    assert sequence.reordered == sum(arrival is Arrival.LATE for arrival in seen)
