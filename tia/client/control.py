"""The Twisted client's control connection: Deferred-returning TiA 1.0 requests, and ``connectTiA``.

``TiAControlProtocol`` queues requests and matches replies in order, because
TiA answers every request exactly once and in order (SPEC section 1). Server
``Error`` replies errback with ``TiAServerError``; a lost connection fails
every pending request with ``TiAConnectionLost``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Literal, cast

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, wrapClientTLS
from twisted.internet.interfaces import (
    IAddress,
    IOpenSSLClientConnectionCreator,
    IReactorTCP,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from tia.client.errors import TiAClientError, TiAConnectionLost, TiAProtocolError, TiAServerError
from tia.client.shims import Endpoint, transport_of
from tia.client.tls import TLSSettings, twisted_options
from tia.protocol.control import (
    Command,
    ControlMessage,
    ControlParser,
    ControlProtocolError,
    build_message,
)
from tia.protocol.custom import CustomSpec, build_custom_xml
from tia.protocol.endpoints import parse_description
from tia.protocol.metainfo import MetaInfo, MetaInfoError

__all__ = ["TiAControlProtocol", "connectTiA"]

DataTransport = Literal["TCP", "UDP"]


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
        self._close_waiters: list[Deferred[None]] = []
        self._failure: TiAClientError | None = None
        self.connected = False
        self.close_reason: Failure | None = None
        """Why the connection closed, once it has."""

    # connection life cycle

    def connectionMade(self) -> None:
        self.connected = True
        self._failure = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        self.close_reason = reason
        error = self._failure or TiAConnectionLost(
            f"control connection lost: {reason.getErrorMessage()}", reason
        )
        if self._failure is None:
            self._failure = error
        self._fail_pending(error)
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def whenClosed(self) -> Deferred[None]:
        """Fires (with ``None``) once the connection is closed; ``close_reason`` says why."""
        if self.close_reason is not None:
            return defer.succeed(None)
        waiter: Deferred[None] = Deferred()
        self._close_waiters.append(waiter)
        return waiter

    def close(self) -> Deferred[None]:
        """Close the connection; fires when it is closed."""
        closed = self.whenClosed()
        transport = transport_of(self)
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
            self._protocol_error(error)
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
        self._protocol_error(
            ControlProtocolError(f"control line longer than {self.MAX_LENGTH} bytes")
        )

    def _protocol_error(self, error: ControlProtocolError) -> None:
        """The stream cannot be resynchronised: fail everything and close."""
        self._log.error(
            "control protocol error from {peer}: {error}", peer=self.peer, error=error
        )
        self._failure = TiAProtocolError(str(error))
        self._fail_pending(self._failure)
        transport = transport_of(self)
        if transport is not None:
            transport.loseConnection()

    def _dispatch(self, message: ControlMessage) -> None:
        if not self._pending:
            self._protocol_error(
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

    def _fail_pending(self, error: TiAClientError) -> None:
        pending, self._pending = self._pending, deque()
        for waiter in pending:
            if not waiter.called:
                waiter.errback(error)

    @property
    def peer(self) -> str:
        """The server's address as text, for messages ("?" before connecting)."""
        transport = transport_of(self)
        return str(transport.getPeer()) if transport is not None else "?"

    # requests

    def request(
        self, command: str, parameter: str | None = None, content: bytes = b""
    ) -> Deferred[ControlMessage]:
        """Send any request; the Deferred fires with its reply (errors errback)."""
        transport = transport_of(self)
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

    async def _expect_port(self, reply: str, command: str, parameter: str | None = None) -> int:
        message = await self._expect(reply, command, parameter)
        text = message.parameter or ""
        if not (text.isascii() and text.isdigit() and 0 < int(text) < 65536):
            raise TiAProtocolError(f"{command}: invalid port {text!r} in the reply")
        return int(text)

    async def _expect_ok(self, command: str, content: bytes = b"") -> None:
        await self._expect(Command.OK, command, None, content)

    async def _metainfo(self) -> MetaInfo:
        message = await self._expect(Command.METAINFO, Command.GET_METAINFO)
        try:
            return MetaInfo.from_xml(message.content)
        except MetaInfoError as error:
            raise TiAProtocolError(f"GetMetaInfo: unusable metainfo: {error}") from None

    def checkProtocolVersion(self) -> Deferred[None]:
        """``CheckProtocolVersion``; fires ``None`` when the server speaks TiA 1.0."""
        return Deferred.fromCoroutine(self._expect_ok(Command.CHECK_PROTOCOL_VERSION))

    def getMetaInfo(self) -> Deferred[MetaInfo]:
        """``GetMetaInfo``; fires with the parsed ``MetaInfo``."""
        return Deferred.fromCoroutine(self._metainfo())

    def getDataConnection(self, transport: DataTransport = "TCP") -> Deferred[int]:
        """``GetDataConnection:TCP|UDP``; fires with the announced port."""
        if transport not in ("TCP", "UDP"):
            return defer.fail(
                ValueError(f"data transport must be 'TCP' or 'UDP', not {transport!r}")
            )
        return Deferred.fromCoroutine(
            self._expect_port(Command.DATA_CONNECTION_PORT, Command.GET_DATA_CONNECTION, transport)
        )

    def getServerStateConnection(self) -> Deferred[int]:
        """``GetServerStateConnection``; fires with the announced port."""
        return Deferred.fromCoroutine(
            self._expect_port(
                Command.SERVER_STATE_CONNECTION_PORT, Command.GET_SERVER_STATE_CONNECTION
            )
        )

    def setCustomSignalInfo(self, xml: bytes) -> Deferred[None]:
        """``SetCustomSignalInfo`` (libtia extension); send before ``getDataConnection``."""
        return Deferred.fromCoroutine(self._expect_ok(Command.SET_CUSTOM_SIGNAL_INFO, xml))

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
        server = metainfo if metainfo is not None else await self._metainfo()
        await self._expect_ok(Command.SET_CUSTOM_SIGNAL_INFO, build_custom_xml(spec, server))

    def start(self) -> Deferred[None]:
        """``StartDataTransmission``."""
        return Deferred.fromCoroutine(self._expect_ok(Command.START_DATA_TRANSMISSION))

    def stop(self) -> Deferred[None]:
        """``StopDataTransmission``."""
        return Deferred.fromCoroutine(self._expect_ok(Command.STOP_DATA_TRANSMISSION))


class ControlFactory(Factory[TiAControlProtocol]):
    """Builds control protocols and tells the owner about each new connection."""

    def __init__(self, on_connected: Callable[[TiAControlProtocol], object] | None = None) -> None:
        self._on_connected = on_connected

    def buildProtocol(self, addr: IAddress | None) -> TiAControlProtocol:
        protocol = _NotifyingControlProtocol(self._on_connected)
        protocol.factory = self
        return protocol


class _NotifyingControlProtocol(TiAControlProtocol):
    def __init__(self, on_connected: Callable[[TiAControlProtocol], object] | None) -> None:
        super().__init__()
        self._on_connected = on_connected

    def connectionMade(self) -> None:
        super().connectionMade()
        if self._on_connected is not None:
            self._on_connected(self)


def endpoint_for(
    reactor: IReactorTCP, endpoint: str | IStreamClientEndpoint, tls: TLSSettings | None = None
) -> tuple[Endpoint, IOpenSSLClientConnectionCreator | None]:
    """The endpoint of a description, behind TLS when ``tls`` is given, and its TLS options.

    The options check the server's certificate against ``tls_name``; the data
    and state connections reuse them, since they go to an address but reach
    the same server.
    """
    built: IStreamClientEndpoint = (
        clientFromString(reactor, endpoint) if isinstance(endpoint, str) else endpoint  # type: ignore[no-untyped-call]
    )
    if tls is None:
        return cast(Endpoint, built), None
    options = twisted_options(tls, tls_name(endpoint, tls))
    return cast(Endpoint, wrapClientTLS(options, built)), options


def tls_name(endpoint: str | IStreamClientEndpoint, tls: TLSSettings) -> str:
    """The name the server's certificate must carry: ``server_name``, else the host of the
    endpoint description (``tcp:HOST:PORT`` or ``tcp:host=HOST:port=PORT``); an endpoint
    object does not say its host, so with one ``server_name`` is required."""
    name = tls.server_name or (description_host(endpoint) if isinstance(endpoint, str) else None)
    if not name:
        raise ValueError(f"cannot tell the server's name from {endpoint!r}; give TLSSettings(server_name=...)")
    return name


def description_host(description: str) -> str | None:
    """The host of a TCP client endpoint description, unescaped (``tcp6:\\:\\:1:9000`` -> ``::1``)."""
    parsed = parse_description(description)
    if parsed.kind not in ("tcp", "tcp6"):
        return None
    return parsed.keyword("host") or (parsed.positional[0] if parsed.positional else None)


def connectTiA(
    reactor: IReactorTCP, endpoint: str | IStreamClientEndpoint, tls: TLSSettings | None = None
) -> Deferred[TiAControlProtocol]:
    """Open a control connection (``"tcp:host:9000"`` or an endpoint); over TLS with ``tls``."""
    connecting: Deferred[TiAControlProtocol] = endpoint_for(reactor, endpoint, tls)[0].connect(
        ControlFactory()
    )
    return connecting
