"""One master tick as every subscriber of the stream hub receives it, and the subscriber protocol.

The hub reads its sources once per master tick, encodes the packet body once,
and hands the same immutable ``Tick`` to every subscriber: a TCP data
connection or UDP destination adds only its own 33-byte header to
``tick.body``; a customized connection, the recorder, the LSL outlets and the
web display take the samples from ``tick.blocks``. Nobody reaches back into
the hub.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from twisted.logger import Logger

from tia.protocol.packet import BodyLayout, PresentSignals, SampleArray, SignalShape

__all__ = ["Subscriber", "Subscribers", "Tick"]

log = Logger()


class Tick:
    """One master tick; immutable, so subscribers and their threads may keep it.

    ``packet_id`` is the tick number, the same on every connection;
    ``timestamp`` the microseconds from server start to the tick on its
    grid; ``flags`` the signals present; ``body`` the packet body (variable
    header and samples) as it goes on the wire, encoded once.
    """

    __slots__ = ("_blocks", "_layout", "_present", "body", "flags", "packet_id", "timestamp")

    def __init__(
        self, packet_id: int, timestamp: int, present: PresentSignals, body: bytes, layout: BodyLayout
    ) -> None:
        self.packet_id = packet_id
        self.timestamp = timestamp
        self.flags = present.flags  # read by every subscriber: an attribute, not a property
        self.body = body
        self._present = present
        self._layout = layout
        self._blocks: tuple[tuple[int, SampleArray], ...] | None = None

    @classmethod
    def from_blocks(
        cls, packet_id: int, timestamp: int, blocks: Sequence[tuple[int, SampleArray]],
        sample_order: str = "channel-major",
    ) -> Tick:
        """A one-off tick holding ``blocks`` ((flag, (channels, block size) array), wire order),
        for tools and tests; the hub makes its ticks through its own ``BodyLayout``."""
        layout = BodyLayout([SignalShape(flag, *block.shape) for flag, block in blocks], sample_order)
        present, body = layout.encode([block for _, block in blocks])
        return cls(packet_id, timestamp, present, body, layout)

    @property
    def blocks(self) -> tuple[tuple[int, SampleArray], ...]:
        """(flag, (channels, block size) float32 samples) of each present signal, in wire order.

        Read-only views into ``body``, made on first use: what was sent is what
        a sink reads, and a source reusing its buffers cannot change them.
        """
        blocks = self._blocks
        if blocks is None:
            blocks = self._blocks = self._layout.blocks(self._present, self.body)
        return blocks

    def block(self, flag: int) -> SampleArray | None:
        """The samples of signal ``flag`` in this tick, or None when it is absent."""
        for present, block in self.blocks:
            if present == flag:
                return block
        return None

    def __repr__(self) -> str:
        return f"<Tick {self.packet_id} flags=0x{self.flags:x} {len(self.body)} bytes>"


class Subscriber(Protocol):
    """Whatever the hub feeds: data connections, UDP destinations, customized connections, sinks.

    ``deliver`` receives the ticks of one wake-up of the master clock, in
    order: usually one; after a stalled reactor every tick caught up, in
    batches, so that a transport can write them at once. It runs on the
    reactor thread and must return quickly; an exception it raises
    unsubscribes it (logged).
    """

    def deliver(self, ticks: Sequence[Tick]) -> None: ...


class Subscribers:
    """The subscribers one tick source feeds (the hub; a customized stream), in the order they came.

    ``deliver`` hands the ticks to each in turn; one that raises is logged and
    dropped, and the others are not affected.
    """

    __slots__ = ("_members",)

    def __init__(self) -> None:
        self._members: tuple[Subscriber, ...] = ()

    @property
    def members(self) -> tuple[Subscriber, ...]:
        return self._members

    def add(self, subscriber: Subscriber) -> None:
        if not any(member is subscriber for member in self._members):
            self._members = (*self._members, subscriber)

    def remove(self, subscriber: Subscriber) -> None:
        self._members = tuple(member for member in self._members if member is not subscriber)

    def deliver(self, ticks: Sequence[Tick]) -> None:
        for subscriber in self._members:
            try:
                subscriber.deliver(ticks)
            except Exception:
                log.failure("dropping subscriber {subscriber} after a send error", subscriber=subscriber)
                self.remove(subscriber)
