"""The Twisted client's data and server-state channels, decoded by the sans-IO ``tia.protocol``.

``TiATCPDataProtocol`` cuts a TCP stream into packets, ``TiAUDPDataProtocol``
decodes one packet per datagram; both hand every packet to a callback and
watch the connection packet numbers with a ``GapDetector`` (gaps, late
packets, repeats: ``tia.client.sequence``), which drops repeats. Both read
either sample order (``sample_order``, see ``tia.protocol.packet.SAMPLE_ORDERS``)
and hand out (channels, block size) arrays.
``TiAServerStateProtocol`` reports what the server pushes on its state
channel. A raising user callback is logged and never kills a connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import DatagramProtocol, connectionDone
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from tia.client.errors import TiAProtocolError
from tia.client.sequence import Arrival, PacketSequence
from tia.client.shims import TCPTransport, transport_of
from tia.protocol.control import Command, ControlParser, ControlProtocolError
from tia.protocol.packet import (
    DEFAULT_MAX_PACKET_SIZE,
    DataPacket,
    PacketError,
    PacketStreamDecoder,
    decode_packet,
    is_sample_major,
)

__all__ = ["GapDetector", "TiAServerStateProtocol", "TiATCPDataProtocol", "TiAUDPDataProtocol"]

UDP_MAX_PACKET_SIZE = 65535
"""Receive buffer for one datagram: the largest UDP payload plus headroom."""

PacketCallback = Callable[[DataPacket], object]
GapCallback = Callable[[int, int], object]
StateCallback = Callable[[str], object]


class GapDetector(PacketSequence):
    """A ``PacketSequence`` that logs and reports each irregular packet to ``onGap(expected, got)``.

    A jump reports the first number missing and the one received; a late
    packet (``got < expected``, delivered out of order) and a repeated one
    (``got < expected``, dropped) are reported too, and logged as such.
    """

    _log = Logger()

    def __init__(self, onGap: GapCallback | None = None) -> None:
        super().__init__()
        self.on_gap = onGap

    def check(self, number: int) -> Arrival:
        expected = self.expected
        arrival = super().check(number)
        if arrival is Arrival.NEXT:
            return arrival
        assert expected is not None
        if arrival is Arrival.GAP:
            self._log.warn(
                "data gap: expected connection packet {expected}, got {got} ({count} missing)",
                expected=expected, got=number, count=number - expected,
            )
        elif arrival is Arrival.LATE:
            self._log.warn("connection packet {got} arrived late, after {last}: delivered out of order",
                           got=number, last=expected - 1)
        else:
            self._log.warn("connection packet {got} arrived again: dropped", got=number)
        if self.on_gap is not None:
            try:
                self.on_gap(expected, number)
            except Exception:
                self._log.failure("onGap callback raised")
        return arrival


def deliver(log: Logger, on_packet: PacketCallback, packet: DataPacket) -> None:
    """A raising user callback is logged, never allowed to kill the connection."""
    try:
        on_packet(packet)
    except Exception:
        log.failure("onPacket callback raised for packet {id}", id=packet.packet_id)


class TiATCPDataProtocol(TwistedProtocol):
    """A TCP data connection: cut the stream into packets and hand each to ``onPacket``.

    A packet that does not decode makes the stream untrustworthy, so the
    connection is dropped; ``whenClosed()`` then errbacks with ``TiAProtocolError``.
    """

    _log = Logger()

    def __init__(
        self,
        onPacket: PacketCallback,
        onGap: GapCallback | None = None,
        maxPacketSize: int = DEFAULT_MAX_PACKET_SIZE,
        *,
        sample_order: str = "channel-major",
    ) -> None:
        self.on_packet = onPacket
        self.gaps = GapDetector(onGap)
        self.packets_received = 0
        self.error: TiAProtocolError | None = None
        self.close_reason: Failure | None = None
        self._decoder = PacketStreamDecoder(maxPacketSize, sample_order)
        self._close_waiters: list[Deferred[None]] = []

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            # Small periodic packets: without this Nagle adds tens of milliseconds.
            cast(TCPTransport, self.transport).setTcpNoDelay(True)

    def dataReceived(self, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            packets = self._decoder.feed(data)
        except PacketError as error:
            self.error = TiAProtocolError(f"bad data packet: {error}")
            self._log.error("dropping the data connection: {error}", error=error)
            transport = transport_of(self)
            if transport is not None:
                transport.loseConnection()
            packets = error.packets  # the valid packets before the bad one are still delivered
        for packet in packets:
            if self.gaps.check(packet.connection_number) is Arrival.DUPLICATE:
                continue
            self.packets_received += 1
            deliver(self._log, self.on_packet, packet)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.close_reason = reason
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            self._fire(waiter)

    def _fire(self, waiter: Deferred[None]) -> None:
        if self.error is not None:
            waiter.errback(self.error)
        else:
            waiter.callback(None)

    def whenClosed(self) -> Deferred[None]:
        """Fires ``None`` when the connection closes, or errbacks if a packet was bad."""
        waiter: Deferred[None] = Deferred()
        if self.close_reason is not None:
            self._fire(waiter)
        else:
            self._close_waiters.append(waiter)
        return waiter

    def close(self) -> Deferred[None]:
        """Close the connection; fires when it is closed (a bad-packet error is swallowed)."""
        closed = self.whenClosed()
        closed.addErrback(lambda _: None)
        transport = transport_of(self)
        if transport is not None and self.close_reason is None:
            transport.loseConnection()
        return closed


class TiAUDPDataProtocol(DatagramProtocol):
    """UDP data: one packet per datagram. A bad datagram is counted and dropped, not fatal."""

    _log = Logger()

    def __init__(
        self,
        onPacket: PacketCallback,
        onGap: GapCallback | None = None,
        maxPacketSize: int = UDP_MAX_PACKET_SIZE,
        *,
        sample_order: str = "channel-major",
    ) -> None:
        is_sample_major(sample_order)  # a ValueError now rather than at the first datagram
        self.on_packet = onPacket
        self.gaps = GapDetector(onGap)
        self.max_packet_size = maxPacketSize
        self.sample_order = sample_order
        self.packets_received = 0
        self.bad_datagrams = 0

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        try:
            packet = decode_packet(datagram, self.max_packet_size, self.sample_order)
        except PacketError as error:
            self.bad_datagrams += 1
            self._log.warn("dropping a bad datagram from {addr}: {error}", addr=addr, error=error)
            return
        if self.gaps.check(packet.connection_number) is Arrival.DUPLICATE:
            return
        self.packets_received += 1
        deliver(self._log, self.on_packet, packet)


class TiAServerStateProtocol(TwistedProtocol):
    """The server-state channel: the server pushes Running/Shutdown; we never write."""

    _log = Logger()

    def __init__(self, onServerState: StateCallback) -> None:
        self.on_server_state = onServerState
        self.state: str | None = None
        self.close_reason: Failure | None = None
        self._parser = ControlParser()
        self._close_waiters: list[Deferred[None]] = []

    def dataReceived(self, data: bytes) -> None:
        try:
            messages = self._parser.feed(data)
        except ControlProtocolError as error:
            self._log.error("server-state protocol error: {error}", error=error)
            transport = transport_of(self)
            if transport is not None:
                transport.loseConnection()
            return
        for message in messages:
            if message.command not in (
                Command.SERVER_STATE_RUNNING,
                Command.SERVER_STATE_SHUTDOWN,
            ):
                self._log.warn(
                    "unexpected server-state message {command!r}", command=message.command
                )
                continue
            self.state = message.command
            try:
                self.on_server_state(message.command)
            except Exception:
                self._log.failure("onServerState callback raised")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.close_reason = reason
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def close(self) -> Deferred[None]:
        """Close the connection; fires when it is closed."""
        if self.close_reason is not None:
            return defer.succeed(None)
        waiter: Deferred[None] = Deferred()
        self._close_waiters.append(waiter)
        transport = transport_of(self)
        if transport is not None:
            transport.loseConnection()
        return waiter
