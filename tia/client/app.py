"""The Twisted client for applications: Deferred-returning TiA 1.0 control, data and state.

Three layers, each usable on its own:

- ``TiAControlProtocol``: the control connection. Every request returns a
  ``Deferred``; replies are matched to requests in order, because TiA answers
  every request exactly once and in order (SPEC section 1).
- ``TiATCPDataProtocol`` / ``TiAUDPDataProtocol`` / ``TiAServerStateProtocol``:
  the data and state channels, decoding with the sans-IO ``tia.protocol`` and
  handing packets to a callback.
- ``TiAStream``: the whole session (version check, metainfo, data connection,
  start, stop), optionally reconnecting with ``ClientService`` and reporting the
  time lost across the gap.

Every bit of timing goes through the injected reactor so tests drive it with
``task.Clock`` / ``MemoryReactor``. Twisted's interfaces are zope interfaces,
which mypy cannot type without a plugin; the small ``typing.Protocol`` classes
below describe the few transport and reactor methods used, and the objects are
cast to them at the boundary.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    clientFromString,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IAddress,
    IOpenSSLClientConnectionCreator,
    IProtocolFactory,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import DatagramProtocol, Factory, connectionDone
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from tia.client.tls import TLSSettings, twisted_options
from tia.protocol.control import (
    Command,
    ControlMessage,
    ControlParser,
    ControlProtocolError,
    build_message,
)
from tia.protocol.custom import CustomSpec, build_custom_xml
from tia.protocol.metainfo import MetaInfo, MetaInfoError
from tia.protocol.packet import (
    DEFAULT_MAX_PACKET_SIZE,
    DataPacket,
    PacketError,
    PacketStreamDecoder,
    decode_packet,
)

__all__ = [
    "GapDetector",
    "TiAClientError",
    "TiAConnectionLost",
    "TiAControlProtocol",
    "TiAProtocolError",
    "TiAServerError",
    "TiAServerStateProtocol",
    "TiAStream",
    "TiATCPDataProtocol",
    "TiAUDPDataProtocol",
    "connectTiA",
]

UDP_MAX_PACKET_SIZE = 65535
"""Receive buffer for one datagram: the largest UDP payload plus headroom."""

DataTransport = Literal["TCP", "UDP"]
PacketCallback = Callable[[DataPacket], object]
GapCallback = Callable[[int, int], object]
StateCallback = Callable[[str], object]


# -- errors -----------------------------------------------------------------


class TiAClientError(Exception):
    """Base of every error this client reports, so callers can catch one type."""


class TiAServerError(TiAClientError):
    """The server answered ``Error`` or ``ValidationError``; ``text`` is its reason."""

    def __init__(self, text: str, command: str = Command.ERROR) -> None:
        super().__init__(text)
        self.text = text
        self.command = command


class TiAConnectionLost(TiAClientError):
    """The connection closed before the reply arrived (or before the request was sent)."""

    def __init__(self, message: str, reason: Failure | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class TiAProtocolError(TiAClientError):
    """The peer broke the wire contract: bad framing, an unexpected reply, a bad packet."""


# -- typing shims for zope interfaces ----------------------------------------


class _Transport(Protocol):
    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def getPeer(self) -> IAddress: ...


class _TCPTransport(Protocol):
    def setTcpNoDelay(self, enabled: bool) -> None: ...


class _Endpoint(Protocol):
    def connect(self, protocolFactory: Factory[Any]) -> Deferred[Any]: ...


class _UDPReactor(Protocol):
    def listenUDP(
        self, port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> _ListeningPort: ...


class _ListeningPort(Protocol):
    def stopListening(self) -> Deferred[None] | None: ...


class _Clock(Protocol):
    def seconds(self) -> float: ...
    def callLater(self, delay: float, callable: Callable[[], object]) -> object: ...


def _transportOf(protocol: TwistedProtocol) -> _Transport | None:
    return cast("_Transport | None", protocol.transport)


# -- control ---------------------------------------------------------------


class TiAControlProtocol(LineReceiver):
    """The control connection: queue requests, match replies in order, fail pending on loss.

    Framing is ``LineReceiver`` (lines ending in ``\\n``, raw mode for
    content); the message grammar is ``ControlParser`` so it is shared with the
    server and the blocking client.
    """

    delimiter = b"\n"
    _log = Logger()

    def __init__(self) -> None:
        self._parser = ControlParser()
        self.MAX_LENGTH = self._parser.max_line_length
        self._pending: deque[Deferred[ControlMessage]] = deque()
        self._closeWaiters: list[Deferred[None]] = []
        self._failure: TiAClientError | None = None
        self.connected = False
        self.closeReason: Failure | None = None
        """Why the connection closed, once it has."""

    # connection life cycle

    def connectionMade(self) -> None:
        self.connected = True
        self._failure = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        self.closeReason = reason
        error = self._failure or TiAConnectionLost(
            f"control connection lost: {reason.getErrorMessage()}", reason
        )
        if self._failure is None:
            self._failure = error
        self._failPending(error)
        waiters, self._closeWaiters = self._closeWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def whenClosed(self) -> Deferred[None]:
        """Fires (with ``None``) once the connection is closed; ``closeReason`` says why."""
        if self.closeReason is not None:
            return defer.succeed(None)
        waiter: Deferred[None] = Deferred()
        self._closeWaiters.append(waiter)
        return waiter

    def close(self) -> Deferred[None]:
        """Close the connection; fires when it is closed."""
        closed = self.whenClosed()
        transport = _transportOf(self)
        if transport is not None and self.connected:
            transport.loseConnection()
        return closed

    # framing

    def lineReceived(self, line: bytes) -> None:
        if self._failure is not None:
            return
        try:
            message = self._parser.line_received(line)
        except ControlProtocolError as error:
            self._protocolError(error)
            return
        if message is not None:
            self._dispatch(message)
        elif self._parser.content_remaining:
            self.setRawMode()  # type: ignore[no-untyped-call]

    def rawDataReceived(self, data: bytes) -> None:
        if self._failure is not None:
            return
        message, rest = self._parser.content_received(data)
        if message is None:
            return
        self._dispatch(message)
        self.setLineMode()  # type: ignore[no-untyped-call]
        if rest:
            # LineReceiver is inside its receive loop: this only re-buffers ``rest``.
            self.setLineMode(rest)  # type: ignore[no-untyped-call]

    def lineLengthExceeded(self, line: bytes) -> None:
        self._protocolError(
            ControlProtocolError(f"control line longer than {self.MAX_LENGTH} bytes")
        )

    def _protocolError(self, error: ControlProtocolError) -> None:
        """The stream cannot be resynchronised: fail everything and close."""
        self._log.error(
            "control protocol error from {peer}: {error}", peer=self._peer(), error=error
        )
        self._failure = TiAProtocolError(str(error))
        self._failPending(self._failure)
        transport = _transportOf(self)
        if transport is not None:
            transport.loseConnection()

    def _dispatch(self, message: ControlMessage) -> None:
        if not self._pending:
            self._protocolError(
                ControlProtocolError(f"unsolicited reply {message.command!r} from the server")
            )
            return
        waiter = self._pending.popleft()
        if waiter.called:
            # The caller cancelled (e.g. timed out); the reply is consumed in order anyway.
            return
        if message.is_error:
            text = message.error_text()
            self._log.debug("server error reply: {text}", text=text)
            waiter.errback(TiAServerError(text, message.command))
        else:
            waiter.callback(message)

    def _failPending(self, error: TiAClientError) -> None:
        pending, self._pending = self._pending, deque()
        for waiter in pending:
            if not waiter.called:
                waiter.errback(error)

    def _peer(self) -> str:
        transport = _transportOf(self)
        return str(transport.getPeer()) if transport is not None else "?"

    # requests

    def request(
        self, command: str, parameter: str | None = None, content: bytes = b""
    ) -> Deferred[ControlMessage]:
        """Send any request; the Deferred fires with its reply (errors errback)."""
        transport = _transportOf(self)
        if self._failure is not None:
            return defer.fail(self._failure)
        if transport is None or not self.connected:
            return defer.fail(TiAConnectionLost("control connection is not connected"))
        try:
            data = build_message(command, parameter, content)
        except ValueError as error:
            return defer.fail(error)
        waiter: Deferred[ControlMessage] = Deferred()
        self._pending.append(waiter)
        transport.write(data)
        return waiter

    async def _expect(
        self, reply: str, command: str, parameter: str | None = None, content: bytes = b""
    ) -> ControlMessage:
        message = await self.request(command, parameter, content)
        if message.command != reply:
            raise TiAProtocolError(
                f"{command}: expected the reply {reply!r}, got {message.command!r}"
            )
        return message

    async def _expectPort(self, reply: str, command: str, parameter: str | None = None) -> int:
        message = await self._expect(reply, command, parameter)
        text = message.parameter or ""
        if not (text.isascii() and text.isdigit() and 0 < int(text) < 65536):
            raise TiAProtocolError(f"{command}: invalid port {text!r} in the reply")
        return int(text)

    async def _expectOK(self, command: str, content: bytes = b"") -> None:
        await self._expect(Command.OK, command, None, content)

    async def _metaInfo(self) -> MetaInfo:
        message = await self._expect(Command.METAINFO, Command.GET_METAINFO)
        try:
            return MetaInfo.from_xml(message.content)
        except MetaInfoError as error:
            raise TiAProtocolError(f"GetMetaInfo: unusable metainfo: {error}") from None

    def checkProtocolVersion(self) -> Deferred[None]:
        """``CheckProtocolVersion``; fires ``None`` when the server speaks TiA 1.0."""
        return Deferred.fromCoroutine(self._expectOK(Command.CHECK_PROTOCOL_VERSION))

    def getMetaInfo(self) -> Deferred[MetaInfo]:
        """``GetMetaInfo``; fires with the parsed ``MetaInfo``."""
        return Deferred.fromCoroutine(self._metaInfo())

    def getDataConnection(self, transport: DataTransport = "TCP") -> Deferred[int]:
        """``GetDataConnection:TCP|UDP``; fires with the announced port."""
        if transport not in ("TCP", "UDP"):
            return defer.fail(
                ValueError(f"data transport must be 'TCP' or 'UDP', not {transport!r}")
            )
        return Deferred.fromCoroutine(
            self._expectPort(Command.DATA_CONNECTION_PORT, Command.GET_DATA_CONNECTION, transport)
        )

    def getServerStateConnection(self) -> Deferred[int]:
        """``GetServerStateConnection``; fires with the announced port."""
        return Deferred.fromCoroutine(
            self._expectPort(
                Command.SERVER_STATE_CONNECTION_PORT, Command.GET_SERVER_STATE_CONNECTION
            )
        )

    def setCustomSignalInfo(self, xml: bytes) -> Deferred[None]:
        """``SetCustomSignalInfo`` (libtia extension); send before ``getDataConnection``."""
        return Deferred.fromCoroutine(self._expectOK(Command.SET_CUSTOM_SIGNAL_INFO, xml))

    def customize(self, spec: CustomSpec, metainfo: MetaInfo | None = None) -> Deferred[None]:
        """Ask for a channel subset and/or downsampling, e.g. ``{"eeg": {"channels": [1, 5], "downsample": 4}}``.

        Signals not named are not sent; ``channels`` are the server's 1-based
        numbers or labels, in the wanted order (default all); ``downsample`` an
        integer dividing the signal's block size (default 1). Send it before
        ``getDataConnection``; ``getMetaInfo()`` then describes the customized
        stream. ``metainfo`` is the server's (fetched when not given). Errbacks
        with ``CustomSignalInfoError`` (a ``ValueError``) when the spec does not
        fit the server, ``TiAServerError`` when the server refuses it.
        """
        return Deferred.fromCoroutine(self._customize(spec, metainfo))

    async def _customize(self, spec: CustomSpec, metainfo: MetaInfo | None) -> None:
        server = metainfo if metainfo is not None else await self._metaInfo()
        await self._expectOK(Command.SET_CUSTOM_SIGNAL_INFO, build_custom_xml(spec, server))

    def start(self) -> Deferred[None]:
        """``StartDataTransmission``."""
        return Deferred.fromCoroutine(self._expectOK(Command.START_DATA_TRANSMISSION))

    def stop(self) -> Deferred[None]:
        """``StopDataTransmission``."""
        return Deferred.fromCoroutine(self._expectOK(Command.STOP_DATA_TRANSMISSION))


class _ControlFactory(Factory[TiAControlProtocol]):
    """Builds control protocols and tells the owner about each new connection."""

    def __init__(self, onConnected: Callable[[TiAControlProtocol], object] | None = None) -> None:
        self._onConnected = onConnected

    def buildProtocol(self, addr: IAddress | None) -> TiAControlProtocol:
        protocol = _NotifyingControlProtocol(self._onConnected)
        protocol.factory = self
        return protocol


class _NotifyingControlProtocol(TiAControlProtocol):
    def __init__(self, onConnected: Callable[[TiAControlProtocol], object] | None) -> None:
        super().__init__()
        self._onConnected = onConnected

    def connectionMade(self) -> None:
        super().connectionMade()
        if self._onConnected is not None:
            self._onConnected(self)


def _endpointFor(
    reactor: IReactorTCP, endpoint: str | IStreamClientEndpoint, tls: TLSSettings | None = None
) -> tuple[_Endpoint, IOpenSSLClientConnectionCreator | None]:
    """The endpoint of a description, behind TLS when ``tls`` is given, and its TLS options.

    The options check the server's certificate against ``_tlsName``; the data
    and state connections reuse them, since they go to an address but reach
    the same server.
    """
    built: IStreamClientEndpoint = (
        clientFromString(reactor, endpoint) if isinstance(endpoint, str) else endpoint  # type: ignore[no-untyped-call]
    )
    if tls is None:
        return cast(_Endpoint, built), None
    options = twisted_options(tls, _tlsName(built, tls))
    return cast(_Endpoint, wrapClientTLS(options, built)), options


def _tlsName(endpoint: object, tls: TLSSettings) -> str:
    """The name the server's certificate must carry: ``server_name``, else the host connected to."""
    name = tls.server_name or getattr(endpoint, "_host", None) or getattr(endpoint, "_hostText", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"cannot tell the server's name from {endpoint!r}; give TLSSettings(server_name=...)")
    return name


def connectTiA(
    reactor: IReactorTCP, endpoint: str | IStreamClientEndpoint, tls: TLSSettings | None = None
) -> Deferred[TiAControlProtocol]:
    """Open a control connection (``"tcp:host:9000"`` or an endpoint); over TLS with ``tls``."""
    connecting: Deferred[TiAControlProtocol] = _endpointFor(reactor, endpoint, tls)[0].connect(
        _ControlFactory()
    )
    return connecting


# -- data ------------------------------------------------------------------


class GapDetector:
    """Watches connection packet numbers, which count up by one per packet on a connection.

    The first packet sets the baseline (the reference server sends its global
    packet id here, not 0). A jump reports ``onGap(expected, got)``; a late or
    repeated datagram (``got < expected``) is reported too but does not move
    the expectation back.
    """

    _log = Logger()

    def __init__(self, onGap: GapCallback | None = None) -> None:
        self.onGap = onGap
        self.expected: int | None = None
        self.gaps = 0
        self.lost = 0

    def check(self, number: int) -> None:
        expected = self.expected
        if expected is None or number == expected:
            self.expected = number + 1
            return
        self.gaps += 1
        if number > expected:
            self.lost += number - expected
            self.expected = number + 1
        self._log.warn(
            "data gap: expected connection packet {expected}, got {got}",
            expected=expected,
            got=number,
        )
        if self.onGap is not None:
            try:
                self.onGap(expected, number)
            except Exception:
                self._log.failure("onGap callback raised")


def _deliver(log: Logger, onPacket: PacketCallback, packet: DataPacket) -> None:
    """A raising user callback is logged, never allowed to kill the connection."""
    try:
        onPacket(packet)
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
    ) -> None:
        self.onPacket = onPacket
        self.gaps = GapDetector(onGap)
        self.packetsReceived = 0
        self.error: TiAProtocolError | None = None
        self.closeReason: Failure | None = None
        self._decoder = PacketStreamDecoder(maxPacketSize)
        self._closeWaiters: list[Deferred[None]] = []

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            # Small periodic packets: without this Nagle adds tens of milliseconds.
            cast(_TCPTransport, self.transport).setTcpNoDelay(True)

    def dataReceived(self, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            packets = self._decoder.feed(data)
        except PacketError as error:
            self.error = TiAProtocolError(f"bad data packet: {error}")
            self._log.error("dropping the data connection: {error}", error=error)
            transport = _transportOf(self)
            if transport is not None:
                transport.loseConnection()
            packets = error.packets  # the valid packets before the bad one are still delivered
        for packet in packets:
            self.packetsReceived += 1
            self.gaps.check(packet.connection_number)
            _deliver(self._log, self.onPacket, packet)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closeReason = reason
        waiters, self._closeWaiters = self._closeWaiters, []
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
        if self.closeReason is not None:
            self._fire(waiter)
        else:
            self._closeWaiters.append(waiter)
        return waiter

    def close(self) -> Deferred[None]:
        """Close the connection; fires when it is closed (a bad-packet error is swallowed)."""
        closed = self.whenClosed()
        closed.addErrback(lambda _: None)
        transport = _transportOf(self)
        if transport is not None and self.closeReason is None:
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
    ) -> None:
        self.onPacket = onPacket
        self.gaps = GapDetector(onGap)
        self.maxPacketSize = maxPacketSize
        self.packetsReceived = 0
        self.badDatagrams = 0

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        try:
            packet = decode_packet(datagram, self.maxPacketSize)
        except PacketError as error:
            self.badDatagrams += 1
            self._log.warn("dropping a bad datagram from {addr}: {error}", addr=addr, error=error)
            return
        self.packetsReceived += 1
        self.gaps.check(packet.connection_number)
        _deliver(self._log, self.onPacket, packet)


class TiAServerStateProtocol(TwistedProtocol):
    """The server-state channel: the server pushes Running/Shutdown; we never write."""

    _log = Logger()

    def __init__(self, onServerState: StateCallback) -> None:
        self.onServerState = onServerState
        self.state: str | None = None
        self.closeReason: Failure | None = None
        self._parser = ControlParser()
        self._closeWaiters: list[Deferred[None]] = []

    def dataReceived(self, data: bytes) -> None:
        try:
            messages = self._parser.feed(data)
        except ControlProtocolError as error:
            self._log.error("server-state protocol error: {error}", error=error)
            transport = _transportOf(self)
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
                self.onServerState(message.command)
            except Exception:
                self._log.failure("onServerState callback raised")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closeReason = reason
        waiters, self._closeWaiters = self._closeWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def close(self) -> Deferred[None]:
        """Close the connection; fires when it is closed."""
        if self.closeReason is not None:
            return defer.succeed(None)
        waiter: Deferred[None] = Deferred()
        self._closeWaiters.append(waiter)
        transport = _transportOf(self)
        if transport is not None:
            transport.loseConnection()
        return waiter


# -- the whole session -------------------------------------------------------


@dataclass(eq=False)
class _Session:
    """One control connection and everything hanging off it."""

    control: TiAControlProtocol
    metainfo: MetaInfo | None = None
    tcpData: TiATCPDataProtocol | None = None
    udpData: TiAUDPDataProtocol | None = None
    udpPort: _ListeningPort | None = None
    state: TiAServerStateProtocol | None = None
    started: bool = False
    ended: bool = False
    firstPacketSeen: bool = False
    closing: list[Deferred[None]] = field(default_factory=list)


class TiAStream:
    """A TiA data stream in the Twisted style: ``await stream.start()`` ... ``stream.stop()``.

    ``start()`` connects the control channel, checks the version, gets the
    metainfo, asks for a data connection, connects (TCP) or listens (UDP), and
    starts transmission. With ``reconnect=True`` a lost control or data
    connection is re-established by a ``ClientService`` with ``backoffPolicy()``
    and streaming resumes; ``onReconnect(seconds_lost)`` then tells how much
    signal time fell into the gap, computed from the server's packet ids (its
    tick numbers). Without reconnection a lost session calls ``onDisconnect``.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorTCP,
        endpoint: str | IStreamClientEndpoint,
        transport: DataTransport = "TCP",
        onPacket: PacketCallback | None = None,
        onServerState: StateCallback | None = None,
        onGap: GapCallback | None = None,
        *,
        onReconnect: Callable[[float], object] | None = None,
        onDisconnect: Callable[[Failure], object] | None = None,
        reconnect: bool = False,
        retryPolicy: Callable[[int], float] | None = None,
        timeout: float | None = 30.0,
        udpInterface: str = "0.0.0.0",
        dataHost: str | None = None,
        customSignalInfo: bytes | None = None,
        customize: CustomSpec | None = None,
        tls: TLSSettings | None = None,
    ) -> None:
        """``reactor`` must also provide ``IReactorTime`` and, for UDP, ``IReactorUDP``.

        ``onPacket(packet)`` gets every decoded packet; ``onGap(expected, got)``
        a jump in the connection packet numbers within one data connection
        (UDP loss or reordering); ``onReconnect(seconds_lost)`` the signal time
        missed across a reconnection; ``onDisconnect(reason)`` a lost session
        when ``reconnect`` is off; ``onServerState(name)`` the server-state
        messages (the state channel is only connected when it is given).
        ``retryPolicy`` defaults to ``backoffPolicy()``.
        ``timeout`` bounds each session set-up and the final Stop request;
        ``dataHost`` overrides the host of the TCP data connection (by default
        the control connection's peer address); ``customize`` asks for a channel
        subset and downsampling (see ``TiAControlProtocol.customize``), and
        ``customSignalInfo`` is the same as a raw ``SetCustomSignalInfo`` document;
        either is sent before the data connection is requested, and the metainfo
        ``start()`` fires with then describes the customized stream. ``tls`` (a
        txtia extension) makes the control, data and state connections TLS, each
        checked against the control endpoint's host or ``tls.server_name``; UDP
        data cannot be encrypted, so it is refused with TLS.
        """
        if transport not in ("TCP", "UDP"):
            raise ValueError(f"transport must be 'TCP' or 'UDP', not {transport!r}")
        if customize is not None and customSignalInfo is not None:
            raise ValueError("give customize or customSignalInfo, not both")
        if tls is not None and transport == "UDP":
            raise ValueError("UDP data cannot be encrypted: use transport='TCP' with TLS")
        self._reactor = reactor
        self._clock = cast(IReactorTime, reactor)
        self._endpoint, self._tlsOptions = _endpointFor(reactor, endpoint, tls)
        self.transport: DataTransport = transport
        self.onPacket = onPacket
        self.onServerState = onServerState
        self.onGap = onGap
        self.onReconnect = onReconnect
        self.onDisconnect = onDisconnect
        self.reconnect = reconnect
        self.timeout = timeout
        self.udpInterface = udpInterface
        self.dataHost = dataHost
        self.customSignalInfo = customSignalInfo
        self.customize = customize
        self._policy = retryPolicy or backoffPolicy()

        self.metainfo: MetaInfo | None = None
        """The metainfo of the current (or last) session."""
        self.reconnections = 0
        self.ticksLost = 0
        """Packets (server ticks) lost across reconnections so far, when known."""

        self._session: _Session | None = None
        self._service: ClientService | None = None
        self._starting: Deferred[MetaInfo] | None = None
        self._stopWaiters: list[Deferred[None]] | None = None
        self._stopped = False
        self._failedSessions = 0
        self._lastPacketId: int | None = None
        self._lastPacketTime = 0.0
        self._awaitingResume = False

    @property
    def running(self) -> bool:
        """True while a session is streaming."""
        return self._session is not None and self._session.started

    @property
    def control(self) -> TiAControlProtocol | None:
        """The current control connection, for extra requests."""
        return self._session.control if self._session is not None else None

    # start

    def start(self) -> Deferred[MetaInfo]:
        """Connect and start streaming; fires with the server's metainfo."""
        if self._starting is not None or self._service is not None or self._session is not None:
            return defer.fail(TiAClientError("TiAStream.start() was already called"))
        if self._stopWaiters is not None and not self._stopped:
            return defer.fail(TiAClientError("TiAStream.stop() is still in progress"))
        self._stopWaiters, self._stopped = None, False
        starting: Deferred[MetaInfo] = Deferred()
        self._starting = starting
        factory = _ControlFactory(self._controlConnected)
        if self.reconnect:
            service = ClientService(
                cast(IStreamClientEndpoint, self._endpoint),
                cast(IProtocolFactory, factory),
                retryPolicy=self._retryDelay,
                clock=self._clock,
            )
            self._service = service
            service.startService()
            service.whenConnected(failAfterFailures=1).addErrback(self._firstConnectFailed)
        else:
            self._endpoint.connect(factory).addErrback(self._firstConnectFailed)
        return starting

    def _retryDelay(self, attempt: int) -> float:
        """Sessions that connect but fail to set up also count as failed attempts."""
        return self._policy(attempt + self._failedSessions)

    def _firstConnectFailed(self, failure: Failure) -> None:
        if self._starting is not None and not self._starting.called:
            self._log.error(
                "cannot connect to the TiA server: {error}", error=failure.getErrorMessage()
            )
            # We are inside ClientService's state machine: stop it on the next turn.
            self._failStart(failure, stopLater=True)

    def _failStart(self, failure: Failure, stopLater: bool = False) -> None:
        starting, self._starting = self._starting, None
        service, self._service = self._service, None
        if service is not None:
            if stopLater:
                cast(_Clock, self._clock).callLater(0, service.stopService)
            else:
                service.stopService()
        if starting is not None and not starting.called:
            starting.errback(failure)

    def _controlConnected(self, control: TiAControlProtocol) -> None:
        if self._stopWaiters is not None:
            transport = _transportOf(control)
            if transport is not None:
                transport.loseConnection()
            return
        session = _Session(control)
        self._session = session

        def controlClosed(_: None) -> None:
            self._sessionLost(session, control.closeReason or connectionDone)

        control.whenClosed().addCallback(controlClosed)
        setup = Deferred.fromCoroutine(self._setUp(session))
        if self.timeout is not None:
            setup.addTimeout(self.timeout, self._clock)
        setup.addCallbacks(
            lambda metainfo: self._setUpDone(session, metainfo),
            lambda failure: self._setUpFailed(session, failure),
        )

    async def _setUp(self, session: _Session) -> MetaInfo:
        control = session.control
        await control.checkProtocolVersion()
        metainfo = await control.getMetaInfo()
        host = self.dataHost or self._peerHost(control)
        if self.customize is not None or self.customSignalInfo is not None:
            if self.customize is not None:
                await control.customize(self.customize, metainfo)
            else:
                assert self.customSignalInfo is not None
                await control.setCustomSignalInfo(self.customSignalInfo)
            metainfo = await control.getMetaInfo()  # what this connection will receive
        session.metainfo = metainfo
        if self.onServerState is not None:
            statePort = await control.getServerStateConnection()
            state = TiAServerStateProtocol(self.onServerState)
            await self._connectTCP(host, statePort, state)
            session.state = state
        port = await control.getDataConnection(self.transport)

        def onPacket(packet: DataPacket) -> None:
            self._packetReceived(session, packet)

        if self.transport == "TCP":
            data = TiATCPDataProtocol(onPacket, self.onGap)
            await self._connectTCP(host, port, data)
            session.tcpData = data
            data.whenClosed().addBoth(lambda result: self._dataLost(session, result))
        else:
            udp = TiAUDPDataProtocol(onPacket, self.onGap)
            session.udpData = udp
            session.udpPort = cast(_UDPReactor, self._reactor).listenUDP(
                port, udp, interface=self.udpInterface, maxPacketSize=UDP_MAX_PACKET_SIZE
            )
        if session.ended:
            raise TiAConnectionLost("the session ended during set-up")
        await control.start()
        session.started = True
        return metainfo

    async def _connectTCP(self, host: str, port: int, protocol: TwistedProtocol) -> None:
        endpointClass = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
        endpoint: IStreamClientEndpoint = endpointClass(self._reactor, host, port)
        if self._tlsOptions is not None:
            endpoint = wrapClientTLS(self._tlsOptions, endpoint)
        await cast(_Endpoint, endpoint).connect(Factory.forProtocol(lambda: protocol))

    @staticmethod
    def _peerHost(control: TiAControlProtocol) -> str:
        transport = _transportOf(control)
        peer = transport.getPeer() if transport is not None else None
        if isinstance(peer, IPv4Address | IPv6Address):
            return str(peer.host)
        raise TiAClientError(f"cannot tell the data host from the control peer {peer!r}")

    def _setUpDone(self, session: _Session, metainfo: MetaInfo) -> None:
        self._failedSessions = 0
        if self.metainfo is not None and self.metainfo != metainfo:
            self._log.warn("the server's metainfo changed across the reconnection")
        self.metainfo = metainfo
        self._log.info(
            "streaming {signals} over {transport} from {peer}",
            signals=[s.type.name for s in metainfo.signals],
            transport=self.transport,
            peer=session.control._peer(),
        )
        starting, self._starting = self._starting, None
        if starting is not None and not starting.called:
            starting.callback(metainfo)

    def _setUpFailed(self, session: _Session, failure: Failure) -> None:
        self._log.error(
            "TiA session set-up failed: {error}", error=failure.getErrorMessage()
        )
        self._endSession(session)
        if self._starting is not None:
            self._failStart(failure)
        else:
            self._failedSessions += 1

    # packets and losses

    def _packetReceived(self, session: _Session, packet: DataPacket) -> None:
        if session.ended:
            return
        now = cast(_Clock, self._clock).seconds()
        if not session.firstPacketSeen:
            session.firstPacketSeen = True
            if self._awaitingResume:
                self._awaitingResume = False
                self._reportResume(session, packet, now)
        self._lastPacketId = packet.packet_id
        self._lastPacketTime = now
        if self.onPacket is not None:
            _deliver(self._log, self.onPacket, packet)

    def _reportResume(self, session: _Session, packet: DataPacket, now: float) -> None:
        """Packet ids are tick numbers: the jump across the reconnect is the ticks lost."""
        metainfo = session.metainfo
        assert metainfo is not None
        period = metainfo.master_block_size / metainfo.master_sampling_rate
        last = self._lastPacketId
        if last is not None and packet.packet_id > last:
            ticks = packet.packet_id - last - 1
            self.ticksLost += ticks
            seconds = ticks * period
        else:
            # The server restarted (ids start over): only wall-clock time can tell.
            seconds = max(0.0, now - self._lastPacketTime - period)
        self._log.info("streaming resumed; {seconds:.3f} s of signal lost", seconds=seconds)
        if self.onReconnect is not None:
            try:
                self.onReconnect(seconds)
            except Exception:
                self._log.failure("onReconnect callback raised")

    def _dataLost(self, session: _Session, result: Failure | None) -> None:
        if session.ended:
            return
        if isinstance(result, Failure):
            reason = result
        elif session.tcpData is not None and session.tcpData.closeReason is not None:
            reason = session.tcpData.closeReason
        else:
            reason = connectionDone
        self._sessionLost(session, reason)

    def _sessionLost(self, session: _Session, reason: Failure) -> None:
        if session.ended:
            return
        self._endSession(session)
        if self._stopWaiters is not None or not session.started:
            return  # stop() is closing it, or the set-up failure path reports it
        self._log.warn("TiA session lost: {reason}", reason=reason.getErrorMessage())
        if self.reconnect:
            self.reconnections += 1
            self._awaitingResume = self._lastPacketId is not None
        elif self.onDisconnect is not None:
            try:
                self.onDisconnect(reason)
            except Exception:
                self._log.failure("onDisconnect callback raised")

    def _endSession(self, session: _Session) -> None:
        """Close everything of a session; a closed control makes ``ClientService`` reconnect."""
        if session.ended:
            return
        session.ended = True
        if self._session is session:
            self._session = None
        if session.tcpData is not None:
            session.closing.append(session.tcpData.close())
        if session.udpPort is not None:
            stopped = session.udpPort.stopListening()
            if stopped is not None:
                session.closing.append(stopped)
        if session.state is not None:
            session.closing.append(session.state.close())
        session.closing.append(session.control.close())

    # stop

    def stop(self) -> Deferred[None]:
        """Send StopDataTransmission, then close data, state and control; fires when closed."""
        waiter: Deferred[None] = Deferred()
        if self._stopWaiters is None:
            self._stopWaiters = [waiter]
            Deferred.fromCoroutine(self._stop())
        elif self._stopped:
            waiter.callback(None)
        else:
            self._stopWaiters.append(waiter)
        return waiter

    async def _stop(self) -> None:
        try:
            await self._shutDown()
        except Exception:
            self._log.failure("error while stopping the TiA stream")
        self._stopped = True
        waiters, self._stopWaiters = self._stopWaiters or [], []
        for waiter in waiters:
            waiter.callback(None)

    async def _shutDown(self) -> None:
        starting, self._starting = self._starting, None
        if starting is not None and not starting.called:
            starting.errback(TiAClientError("TiAStream.stop() was called during start()"))
        session = self._session
        if session is not None and session.started and session.control.connected:
            stopping = session.control.stop()
            if self.timeout is not None:
                stopping.addTimeout(self.timeout, self._clock)
            try:
                await stopping
            except Exception as error:
                self._log.warn("StopDataTransmission failed: {error}", error=error)
        service, self._service = self._service, None
        closing: list[Deferred[None]] = []
        if session is not None:
            self._endSession(session)
            closing.extend(session.closing)
        if service is not None:
            closing.append(service.stopService())
        await defer.DeferredList(closing, consumeErrors=True)
        self._log.info("TiA stream stopped")
