"""Connection packet numbers as a client sees them: gaps, late (reordered) and repeated packets.

The server numbers the packets of each data connection 0, 1, 2, ... and a
packet it had to drop still takes its number (SPEC section 4), so the numbers
tell a client what it missed. Over TCP they only jump (the server dropped
packets for a client that fell behind); over UDP a datagram may also be lost
in the network, arrive after a later one, or arrive twice. ``PacketSequence``
tells these apart and counts them; both clients use it. No Twisted here.

A late packet is still handed out (its samples are real, and its
``packet_id`` says where they belong), but it is counted and reported, never
passed off as in order; a repeated one is dropped, so no sample is handed
out twice.
"""

from __future__ import annotations

import bisect
import enum

__all__ = ["Arrival", "PacketSequence"]

HORIZON = 1 << 16
"""How many packet numbers back a missing one is remembered; a packet older than that is too late
to tell from a repeat, and is treated as one."""


class Arrival(enum.Enum):
    """What one packet's connection packet number says."""

    NEXT = "next"  # the number expected (or the very first packet)
    GAP = "gap"  # beyond the number expected: the numbers in between are missing, for now
    LATE = "late"  # one of the missing numbers, after a later one: out of order
    DUPLICATE = "duplicate"  # received before (or older than HORIZON): dropped


class PacketSequence:
    """Watches the connection packet numbers of one data connection.

    The first packet sets the baseline (the reference server sends its
    global packet id there, not 0); a packet numbered below it was never
    expected and counts as a repeat. ``received`` counts packets handed out,
    ``gaps`` the jumps, ``lost`` the numbers still missing, ``reordered`` the
    late arrivals (each was missing until it came), ``duplicates`` the packets
    dropped as repeats.
    """

    def __init__(self) -> None:
        self.expected: int | None = None
        self.received = 0
        self.gaps = 0
        self.lost = 0
        self.reordered = 0
        self.duplicates = 0
        self._missing: list[tuple[int, int]] = []  # sorted, disjoint [first, end) ranges

    def check(self, number: int) -> Arrival:
        """Account for the packet numbered ``number``; what it was."""
        expected = self.expected
        if expected is None or number == expected:
            arrival = Arrival.NEXT
        elif number > expected:
            arrival = Arrival.GAP
            self.gaps += 1
            self.lost += number - expected
            self._missing.append((expected, number))
        elif self._found_missing(number):
            self.received += 1
            self.lost -= 1
            self.reordered += 1
            return Arrival.LATE
        else:
            self.duplicates += 1
            return Arrival.DUPLICATE
        self.received += 1
        self.expected = number + 1
        self._forget_before(number + 1 - HORIZON)
        return arrival

    def describe(self) -> str:
        """One line for a report: ``1200 packets, 2 gaps (5 lost), 1 late, 0 repeated``."""
        return (
            f"{self.received} packets, {self.gaps} gaps ({self.lost} lost), {self.reordered} late, "
            f"{self.duplicates} repeated"
        )

    def _found_missing(self, number: int) -> bool:
        """Whether ``number`` was missing; if so it is missing no more."""
        index = bisect.bisect_right(self._missing, number, key=lambda missing: missing[0]) - 1
        if index < 0:
            return False
        first, end = self._missing[index]
        if not first <= number < end:
            return False
        parts = [(a, b) for a, b in ((first, number), (number + 1, end)) if a < b]
        self._missing[index : index + 1] = parts
        return True

    def _forget_before(self, oldest: int) -> None:
        missing = self._missing
        while missing and missing[0][0] < oldest:
            end = missing[0][1]
            if end <= oldest:
                missing.pop(0)
            else:
                missing[0] = (oldest, end)
                break
