"""Data channels: a TCP connection per client, UDP destinations, and ``DataChannels`` that opens them.

Every subscriber numbers its own packets from 0 (the connection packet
number); a packet it had to drop still takes its number, so the client sees
its loss as a gap. A TCP client that stops reading never delays the others:
the connection is a streaming producer, and once paused it may fall behind by
at most ``backlog_bytes`` before further packets are dropped.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IPushProducer,
    IReactorTCP,
    IReactorTime,
    IReactorUDP,
    ITCPTransport,
)
from twisted.internet.protocol import DatagramProtocol, Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tia.config import DEFAULT_PEER_TIMEOUT
from tia.protocol.packet import FIXED_HEADER_SIZE, encode_header
from tia.server.custom import CustomStreams
from tia.server.fastpath import DirectWriter
from tia.server.guard import RateLimitedLog, harden_tcp
from tia.server.tick import Subscriber, Tick

if TYPE_CHECKING:
    from tia.config import UDPConfig
    from tia.protocol.custom import CustomSignalInfo
    from tia.server.hub import StreamHub
    from tia.server.tls import ServerTLS

log = Logger()
_refusals = RateLimitedLog(log)  # port scans and strangers must not flood the log
_lost = RateLimitedLog(log)  # nor a client on a flaky link, losing its connection every minute

# Seconds a closing data connection may take to hand over what is buffered (at most the
# backlog) before it is reset: a client that stopped reading would hold it open for ever.
CLOSE_GRACE_SECONDS = 10.0


@implementer(IPushProducer)
class TCPDataProtocol(Protocol):
    """One client's TCP data connection."""

    def __init__(
        self,
        backlog_bytes: int,
        on_lost: Callable[[TCPDataProtocol], None],
        peer_timeout: int = DEFAULT_PEER_TIMEOUT,
    ) -> None:
        self.backlog_bytes = backlog_bytes
        self.paused_limit = backlog_bytes  # what Twisted may hold while paused: the backlog less the kernel's share
        self._on_lost = on_lost
        self.peer_timeout = peer_timeout
        self.packets = 0
        self.dropped = 0
        self.paused = False
        self._paused_bytes = 0
        self._dropped_this_pause = 0
        self.peer = "?"
        self._writer: DirectWriter | None = None
        self._abort_timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
            harden_tcp(self.transport, self.peer_timeout)  # a vanished client is dropped within it
        self._bound_kernel_buffer()
        self._writer = DirectWriter.for_transport(self.transport)
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
        peer = self.transport.getPeer()
        self.peer = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"

    def _bound_kernel_buffer(self) -> None:
        """Make ``backlog`` what a slow client lags at most: the kernel and Twisted share it.

        Left alone, Linux grows a socket's send buffer by itself up to 4 MiB:
        seconds of a stream a client could lag before the backlog even began
        to count. So half the backlog goes to the kernel (it doubles what is
        asked, up to twice ``net.core.wmem_max``) and the rest, as the kernel
        granted it, is what Twisted may hold while the client does not read.
        """
        sock: socket.socket | None = getattr(self.transport, "socket", None)
        if sock is None:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max(1, self.backlog_bytes // 4))
            granted = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
        except OSError:
            return
        self.paused_limit = max(self.backlog_bytes - granted, self.backlog_bytes // 2)

    @property
    def writes_directly(self) -> bool:
        """Whether packets may bypass Twisted's buffer (``tia.server.fastpath``): only on its own
        plain TCP connections, never through TLS or another wrapping transport."""
        return self._writer is not None

    def deliver(self, ticks: Sequence[Tick]) -> None:
        """One packet per tick, numbered on this connection; a catch-up batch in one write."""
        if len(ticks) == 1:
            tick = ticks[0]
            header = self._header(tick)
            if header is not None:
                self._write(header, tick.body)
            return
        parts: list[bytes] = []
        for tick in ticks:
            header = self._header(tick)
            if header is not None:
                parts += (header, tick.body)
        if parts:
            self._write(b"", b"".join(parts))

    def _header(self, tick: Tick) -> bytes | None:
        """This connection's header for ``tick``, or None when the client is too far behind."""
        number = self.packets
        self.packets = number + 1
        body = tick.body
        if self.paused:
            size = FIXED_HEADER_SIZE + len(body)
            if self._paused_bytes + size > self.paused_limit:
                self.dropped += 1
                if not self._dropped_this_pause:
                    log.warn(
                        "data client {peer} is not keeping up: dropping packets from "
                        "connection packet number {number} on", peer=self.peer, number=number,
                    )
                self._dropped_this_pause += 1
                return None
            self._paused_bytes += size
        return encode_header(len(body), tick.flags, tick.packet_id, number, tick.timestamp)

    def _write(self, header: bytes, body: bytes) -> None:
        if self._writer is not None:
            self._writer.write(header, body)
        else:
            assert self.transport is not None
            self.transport.writeSequence((header, body))

    def pauseProducing(self) -> None:
        # Twisted calls this on every write while its buffer is full: count from the first
        if not self.paused:
            self.paused = True
            self._paused_bytes = 0

    def resumeProducing(self) -> None:
        self.paused = False
        if self._dropped_this_pause:
            log.warn(
                "data client {peer} caught up after {count} packets were dropped",
                peer=self.peer, count=self._dropped_this_pause,
            )
            self._dropped_this_pause = 0

    def stopProducing(self) -> None:
        pass

    def close(self, clock: IReactorTime, grace: float = CLOSE_GRACE_SECONDS) -> None:
        """End the stream: what is buffered goes out, then the connection closes.

        A registered producer would hold ``loseConnection`` back, so it goes
        first; a client that does not read within ``grace`` seconds would never
        let the buffer drain, and gets a reset instead.
        """
        transport: Any = self.transport
        if transport is None or transport.disconnecting or not getattr(transport, "connected", True):
            return
        transport.unregisterProducer()
        transport.loseConnection()
        self._abort_timer = clock.callLater(grace, transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        """Clients have nothing to say on the data connection; ignore it."""

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._abort_timer is not None and self._abort_timer.active():
            self._abort_timer.cancel()
        self._abort_timer = None
        if reason is not None and reason.check(ConnectionLost) and not reason.check(ConnectionAborted):
            # not closed by either side: the kernel gave up (harden_tcp's timers) or the peer reset
            _lost.emit(
                self.peer.rpartition(":")[0], "data client {peer} is gone (no answer for {timeout} s, or a reset): "
                "closed after {packets} packets", peer=self.peer, timeout=self.peer_timeout, packets=self.packets,
            )
        self._on_lost(self)


class TCPDataListener(ServerFactory):
    """The one-shot port a client's TCP data connection arrives on.

    It accepts a single connection, from the host of the control connection
    that asked for it, then stops listening.
    """

    noisy = False

    def __init__(
        self,
        peer_host: str,
        backlog_bytes: int,
        on_connected: Callable[[TCPDataProtocol], None],
        on_lost: Callable[[TCPDataProtocol], None],
        peer_timeout: int = DEFAULT_PEER_TIMEOUT,
    ) -> None:
        self.peer_host = peer_host
        self.backlog_bytes = backlog_bytes
        self.peer_timeout = peer_timeout
        self._on_connected = on_connected
        self._on_lost = on_lost
        self.port: IListeningPort | None = None
        self.accepted: TCPDataProtocol | None = None

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        host = getattr(addr, "host", None)
        if self.accepted is not None or host != self.peer_host:
            _refusals.emit(
                ("data", host), "refused a data connection from {host}: this port belongs to {owner}",
                host=host, owner=self.peer_host,
            )
            return None
        protocol = _ConnectedTCPDataProtocol(self)
        self.accepted = protocol
        self.close()
        return protocol

    def close(self) -> None:
        if self.port is not None:
            port, self.port = self.port, None
            port.stopListening()


class _ConnectedTCPDataProtocol(TCPDataProtocol):
    def __init__(self, listener: TCPDataListener) -> None:
        super().__init__(listener.backlog_bytes, listener._on_lost, listener.peer_timeout)
        self._listener = listener

    def connectionMade(self) -> None:
        super().connectionMade()
        self._listener._on_connected(self)


class UDPSender(DatagramProtocol):
    """The one UDP socket all datagrams leave from; send errors are counted, never fatal."""

    noisy = False

    def __init__(self, broadcast: bool = False, multicast_ttl: int = 1, multicast_interface: str | None = None) -> None:
        self.broadcast = broadcast
        self.multicast_ttl = multicast_ttl
        self.multicast_interface = multicast_interface
        self.sent = 0
        self.errors = 0

    def startProtocol(self) -> None:
        assert self.transport is not None
        if self.broadcast:
            self.transport.setBroadcastAllowed(True)
        set_ttl = getattr(self.transport, "setTTL", None)
        if set_ttl is not None:
            set_ttl(self.multicast_ttl)
        if self.multicast_interface and hasattr(self.transport, "setOutgoingInterface"):
            self.transport.setOutgoingInterface(self.multicast_interface)
        sock = getattr(self.transport, "socket", None)
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)

    def send(self, datagram: bytes, address: tuple[str, int]) -> None:
        assert self.transport is not None
        try:
            self.transport.write(datagram, address)
        except OSError as error:
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                log.warn(
                    "UDP send to {address} failed ({error}); {count} datagrams lost so far",
                    address=address, error=error, count=self.errors,
                )
        else:
            self.sent += 1


class UDPDestination:
    """A UDP subscriber: a unicast client, or the shared broadcast/multicast group."""

    def __init__(self, sender: UDPSender, address: tuple[str, int]) -> None:
        self.sender = sender
        self.address = address
        self.packets = 0

    def deliver(self, ticks: Sequence[Tick]) -> None:
        """One datagram per tick, numbered for this destination."""
        for tick in ticks:
            number = self.packets
            self.packets = number + 1
            body = tick.body
            header = encode_header(len(body), tick.flags, tick.packet_id, number, tick.timestamp)
            self.sender.send(header + body, self.address)

    def __repr__(self) -> str:
        return f"<UDPDestination {self.address[0]}:{self.address[1]}>"


def free_udp_port(host: str) -> int:
    """A UDP port free on ``host`` right now, for a unicast client to bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class DataChannels:
    """Where the clients' data goes, for the control sessions that ask for it.

    A one-shot TCP port per client (behind TLS when it is on); UDP to each
    client (unicast) or one shared broadcast/multicast stream; each target fed
    the server's stream or its session's customization of it.
    """

    def __init__(
        self,
        hub: StreamHub,
        reactor: Any,
        udp: UDPConfig,
        backlog_bytes: int,
        tls: ServerTLS | None = None,
        peer_timeout: int = DEFAULT_PEER_TIMEOUT,
    ) -> None:
        self.hub = hub
        self.peer_timeout = peer_timeout
        self.reactor = reactor
        self.udp = udp
        self.backlog_bytes = backlog_bytes
        self.tls = tls
        self.custom_streams = CustomStreams(hub)  # SetCustomSignalInfo: one stream per distinct request
        self.udp_sender: UDPSender | None = None
        self.udp_group: UDPDestination | None = None
        self._group_members: set[object] = set()
        self._udp_port: IListeningPort | None = None
        if udp.mode != "off" and tls is None:  # UDP cannot be encrypted: off while TLS is on
            self.udp_sender = UDPSender(udp.mode == "broadcast", udp.ttl, udp.interface)
            if udp.mode in ("broadcast", "multicast"):
                assert udp.address is not None
                self.udp_group = UDPDestination(self.udp_sender, (udp.address, udp.port))

    # ---------------------------------------------------------------- lifetime

    def _udp_socket(self) -> UDPSender:
        """The UDP socket all datagrams leave from, opened when the first client asks for UDP
        (a server nobody asks for UDP opens no socket and logs nothing about one)."""
        assert self.udp_sender is not None
        if self._udp_port is None:
            udp_reactor: IReactorUDP = self.reactor
            self._udp_port = udp_reactor.listenUDP(
                0, self.udp_sender, interface=self.udp.interface or "", maxPacketSize=8192
            )
        return self.udp_sender

    def stop(self) -> Deferred[None]:
        port, self._udp_port = self._udp_port, None
        stopped = None if port is None else port.stopListening()
        return defer.succeed(None) if stopped is None else stopped

    # ---------------------------------------------------------------- what sessions ask for

    def open_tcp(
        self,
        peer_host: str,
        local_host: str,
        on_connected: Callable[[TCPDataProtocol], None],
        on_lost: Callable[[TCPDataProtocol], None],
    ) -> TCPDataListener:
        """A one-shot port on ``local_host`` for ``peer_host``'s data connection (``.port``: listening)."""
        listener = TCPDataListener(peer_host, self.backlog_bytes, on_connected, on_lost, self.peer_timeout)
        listening: ServerFactory = listener if self.tls is None else self.tls.wrap(listener, "data")
        tcp_reactor: IReactorTCP = self.reactor
        listener.port = tcp_reactor.listenTCP(0, listening, interface=local_host)
        return listener

    def open_udp(self, peer_host: str, local_host: str, customized: bool) -> UDPDestination | str:
        """Where ``peer_host``'s UDP data goes, or why it cannot have UDP (the reason of the Error)."""
        udp = self.udp
        if self.tls is not None:
            return "UDP data is not encrypted, so it is switched off while TLS is on; ask for TCP"
        if self.udp_sender is None:
            return "UDP data is switched off on this server (udp mode = off)"
        sender = self._udp_socket()
        if udp.mode == "unicast":
            return UDPDestination(sender, (peer_host, udp.port or free_udp_port(local_host)))
        assert udp.address is not None and self.udp_group is not None
        if customized:
            return (
                f"custom signal info cannot be sent over UDP {udp.mode}: all UDP clients of this server"
                " share one datagram stream; ask for TCP instead"
            )
        if udp.mode == "broadcast" and not _same_subnet_24(udp.address, peer_host):
            return "Target and remote subnet do not match!"
        return self.udp_group

    def feed(self, target: Subscriber, session: object, custom: CustomSignalInfo | None, streaming: bool) -> None:
        """Start or stop feeding ``target`` for ``session``: the server's stream, its
        customization ``custom``, or (the shared group) while any of its sessions streams."""
        if target is self.udp_group:
            (self._group_members.add if streaming else self._group_members.discard)(session)
            (self.hub.subscribe if self._group_members else self.hub.unsubscribe)(target)
        elif custom is not None:
            streams = self.custom_streams
            (streams.subscribe if streaming else streams.unsubscribe)(custom, target)
        else:
            (self.hub.subscribe if streaming else self.hub.unsubscribe)(target)


def _same_subnet_24(address: str, peer: str) -> bool:
    """The reference's broadcast rule: the client must be in the /24 of the broadcast address."""
    try:
        network = ipaddress.IPv4Network(f"{address}/24", strict=False)
        return ipaddress.IPv4Address(peer) in network
    except ValueError:
        return False
