"""The control channel: a ``LineReceiver`` per client, its lines and bodies to the sans-IO parser.

One ``ServerControlProtocol`` per client holds that client's session: its
data connection (TCP or UDP), whether it is streaming, its custom signal
info if it asked for one (SPEC section 6), and nothing else. Header lines
arrive through ``lineReceived`` (delimiter ``\\n``, at most ``MAX_LENGTH``
bytes, else ``lineLengthExceeded``); a ``Content-Length`` body switches to
raw mode for exactly that many bytes. Every reply is built by
``tia.protocol.control`` and written in one ``write``, because some peers
read a reply with a single ``recv``.

Hostile or broken peers are bounded here (see ``tia.server.guard``): framing
violations get ``Error -- <reason>`` and a close; more than ``request_rate``
requests per second likewise; a connection without a request for
``idle_timeout`` seconds that has no data connection is closed; and a peer
that does not read its replies is not read either (the protocol is a
streaming producer of its own transport), so replies never pile up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer, IReactorTime, ITCPTransport
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger, LogLevel
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from tia.protocol.control import (
    OK_REPLY,
    Command,
    ControlMessage,
    ControlParser,
    ControlProtocolError,
    build_error,
    build_message,
)
from tia.protocol.custom import CustomSignalInfo, CustomSignalInfoError
from tia.protocol.metainfo import MetaInfo
from tia.server.data import DataChannels, TCPDataListener, TCPDataProtocol, UDPDestination
from tia.server.guard import ConnectionGuard, RefusalProtocol, RequestBudget, harden_tcp, is_tls
from tia.server.state import ServerStateChannel
from tia.server.status import SessionStatus

log = Logger()

__all__ = ["ControlCommands", "ControlFactory", "ControlHandler", "ControlLimits", "ServerControlProtocol"]

LINGER_SECONDS = 2.0  # after an Error and our FIN, how long the peer may take to close its side
TLS_HANDSHAKE = b"\x16"  # the first byte of a TLS client's hello (a record of type handshake)

ControlHandler = Callable[["ServerControlProtocol", ControlMessage], bytes]
"""An extension command: the session it came on and the request, to the whole reply (built by
``tia.protocol.control``)."""

TIA_COMMANDS = frozenset({
    Command.CHECK_PROTOCOL_VERSION, Command.GET_METAINFO, Command.GET_DATA_CONNECTION,
    Command.START_DATA_TRANSMISSION, Command.STOP_DATA_TRANSMISSION, Command.GET_SERVER_STATE_CONNECTION,
    Command.SET_CUSTOM_SIGNAL_INFO,
})


class ControlCommands:
    """The control channel's extension commands (txtia's ``StartRecording``, ...).

    An extension registers its commands here; the control channel answers
    them like the TiA 1.0 commands and knows nothing else of the extension.
    A client that never sends them never sees them.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, ControlHandler] = {}

    def register(self, command: str, handler: ControlHandler) -> None:
        if command in TIA_COMMANDS or command in self._handlers:
            raise ValueError(f"the control command {command!r} is taken")
        self._handlers[command] = handler

    def get(self, command: str) -> ControlHandler | None:
        return self._handlers.get(command)

    def __contains__(self, command: object) -> bool:
        return command in self._handlers


@dataclass(frozen=True)
class ControlLimits:
    """What one control connection may send ([server] keys; 0 switches a limit off)."""

    max_line_length: int = 1024
    max_content_length: int = 1 << 20
    request_rate: int = 200  # requests per second (bursts of as many)
    idle_timeout: float = 60.0  # seconds without a request, for a connection that streams nothing


@implementer(IPushProducer)
class ServerControlProtocol(LineReceiver):
    """One client's control connection and session.

    Its collaborators are passed in, each for what it does: ``data`` opens and
    feeds data connections, ``state`` the server-state ports, ``commands``
    answers extension commands, ``sessions`` is the set of live sessions (the
    connection limits count it), ``clock`` times the idle check and the
    request budget, ``guard`` logs violations rate-limited.
    """

    delimiter = b"\n"

    def __init__(
        self,
        *,
        limits: ControlLimits,
        metainfo: MetaInfo,
        data: DataChannels,
        state: ServerStateChannel,
        commands: ControlCommands,
        sessions: set[ServerControlProtocol],
        clock: IReactorTime,
        guard: ConnectionGuard,
    ) -> None:
        self.limits = limits
        self.metainfo = metainfo
        self.data = data
        self.state = state
        self.commands = commands
        self.sessions = sessions
        self.clock = clock
        self.guard = guard
        self.MAX_LENGTH = limits.max_line_length
        self.parser = ControlParser(limits.max_line_length, limits.max_content_length)
        self.metainfo_reply = build_message(Command.METAINFO, content=metainfo.to_xml())
        self.peer_host = "?"
        self.peer = "?"  # host:port
        self.local_host = "127.0.0.1"
        self.started = False
        self.tcp_listener: TCPDataListener | None = None
        self.tcp_data: TCPDataProtocol | None = None
        self.udp_destination: UDPDestination | None = None
        self.custom: CustomSignalInfo | None = None  # SetCustomSignalInfo, as accepted
        self._stream_custom: CustomSignalInfo | None = None  # the same, unless it changes nothing
        self.asked_state = False
        self.requests = 0
        self.closed: Deferred[None] = Deferred()
        self._budget = RequestBudget(limits.request_rate, clock.seconds)
        self._unparsed = b""  # the start of a line not complete yet
        self._idle_timer: IDelayedCall | None = None
        self._linger_timer: IDelayedCall | None = None  # set while closing after an Error
        self._last_request = 0.0
        self._received = False
        self._handlers: dict[str, Callable[[ControlMessage], bytes]] = {
            Command.CHECK_PROTOCOL_VERSION: lambda message: OK_REPLY,
            Command.GET_METAINFO: lambda message: self.metainfo_reply,
            Command.GET_DATA_CONNECTION: self._get_data_connection,
            Command.START_DATA_TRANSMISSION: self._start,
            Command.STOP_DATA_TRANSMISSION: self._stop,
            Command.GET_SERVER_STATE_CONNECTION: self._get_server_state_connection,
            Command.SET_CUSTOM_SIGNAL_INFO: self._set_custom_signal_info,
        }

    # ------------------------------------------------------------ connection

    def connectionMade(self) -> None:
        assert self.transport is not None
        peer, local = self.transport.getPeer(), self.transport.getHost()
        self.peer_host = getattr(peer, "host", "?")
        port = getattr(peer, "port", None)
        self.peer = f"{self.peer_host}:{port}" if port is not None else self.peer_host
        self.local_host = getattr(local, "host", "127.0.0.1")
        self.sessions.add(self)
        harden_tcp(self.transport, self.guard.peer_timeout)  # a vanished client is dropped within it
        # Replies wait in Twisted's buffer while the peer does not read; past its
        # bufferSize we are paused and stop reading the peer's requests in turn.
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self._last_request = self.clock.seconds()
        if self.limits.idle_timeout:
            self._idle_timer = self.clock.callLater(self.limits.idle_timeout, self._idle_check)
        log.info("control connection from {peer}", peer=self.peer)

    def connectionLost(self, reason: Failure | None = None) -> None:
        for timer in (self._idle_timer, self._linger_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._idle_timer = None
        self._unparsed = b""
        self.started = False
        self._update_subscription()
        if self.tcp_listener is not None:
            self.tcp_listener.close()
            self.tcp_listener = None
        if self.tcp_data is not None:
            self.tcp_data.close(self.clock)
        self.udp_destination = None
        self.sessions.discard(self)
        log.info("control connection from {peer} closed", peer=self.peer_host)
        self.closed.callback(None)

    def status(self) -> SessionStatus:
        """A read-only snapshot of this session, for /status and ``GetServerStatus``."""
        custom = self.custom is not None
        if self.tcp_data is not None:
            data = self.tcp_data
            return SessionStatus(self.peer, "TCP", data.peer, self.started, data.packets, data.dropped, custom)
        if self.udp_destination is not None:
            destination = self.udp_destination
            host, port = destination.address
            return SessionStatus(
                self.peer, f"UDP {self.data.udp.mode}", f"{host}:{port}", self.started, destination.packets,
                None, custom,
            )
        waiting = "TCP (not yet connected)" if self.tcp_listener is not None else None
        return SessionStatus(self.peer, waiting, None, self.started, 0, None, custom)

    @property
    def unhandled_bytes(self) -> int:
        """Bytes received and not yet handled: a partial line, or what waits while the peer
        does not read its replies (at most one read of the transport)."""
        return len(self._unparsed)

    # ------------------------------------------------------------ framing (LineReceiver)

    def dataReceived(self, data: bytes) -> None:
        """``LineReceiver``'s loop, walking the bytes with an index instead of splitting the buffer
        once per line (which copies the rest each time: quadratic in a flood of short lines);
        blank lines between messages are skipped in one step. Lines still go to
        ``lineReceived``, bodies to ``rawDataReceived``, endless lines to ``lineLengthExceeded``."""
        if self._closing():
            return  # also what a peer sends after its Error reply: read and dropped
        if not self._received and data:
            self._received = True
            if data[:1] == TLS_HANDSHAKE and not is_tls(self.transport):
                # a TLS client's hello may hold no newline: it would wait for ever for an answer
                self._violation("TLS is off on this server: connect without TLS", key="tls hello")
                return
        buffer = self._unparsed + data if self._unparsed else data
        self._unparsed = b""
        start, size = 0, len(buffer)
        parser = self.parser
        while start < size and not self.paused and not self._closing():
            if not self.line_mode:
                stop = min(size, start + parser.content_remaining)
                self.rawDataReceived(buffer[start:stop])
                start = stop
                continue
            skipped = parser.skip_blanks(buffer, start)
            if skipped != start:
                start = skipped
                continue
            end = buffer.find(self.delimiter, start)
            if end < 0:
                if size - start > self.MAX_LENGTH:
                    self.lineLengthExceeded(buffer[start:])
                    return
                break
            if end - start > self.MAX_LENGTH:
                self.lineLengthExceeded(buffer[start:end])
                return
            line = buffer[start:end]
            start = end + 1
            self.lineReceived(line)
        if start < size and not self._closing():
            self._unparsed = buffer[start:]  # a partial line, or what waits while paused

    def lineReceived(self, line: bytes) -> None:
        try:
            message = self.parser.line_received(line)
        except ControlProtocolError as error:
            self._violation(str(error))
            return
        if self.parser.content_remaining:
            self.setRawMode()  # a Content-Length body follows
        elif message is not None:
            self._dispatch(message)

    def rawDataReceived(self, data: bytes) -> None:
        """Bytes of a ``Content-Length`` body (``dataReceived`` hands over no more than it needs)."""
        message, _ = self.parser.content_received(data)
        if message is not None:
            self.setLineMode()
            self._dispatch(message)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._violation(f"control line longer than {self.MAX_LENGTH} bytes")

    # IPushProducer (LineReceiver's own pause logic): Twisted pauses us while our replies are not read

    def resumeProducing(self) -> None:
        if self.transport is not None and self._closing():
            self.paused = False
            self.transport.unregisterProducer()  # type: ignore[attr-defined]  # lets the close finish
            return
        super().resumeProducing()  # reads the transport again and continues with what is buffered

    def stopProducing(self) -> None:
        self._unparsed = b""
        super().stopProducing()

    # ------------------------------------------------------------ closing

    def _closing(self) -> bool:
        transport: Any = self.transport
        return transport is None or bool(transport.disconnecting) or self._linger_timer is not None

    def close(self) -> None:
        """Close after the buffered replies (a registered producer would hold the close back)."""
        if self._closing():
            return
        assert self.transport is not None
        self._unparsed = b""
        self.transport.unregisterProducer()  # type: ignore[attr-defined]
        self.transport.loseConnection()

    def _violation(self, reason: str, key: str = "violation") -> None:
        """Framing is lost (or the peer is abusive): say why, then close."""
        if self._closing():
            return
        assert self.transport is not None
        self.guard.log.emit(
            (key, self.peer_host), "closing control connection from {peer}: {reason}",
            peer=self.peer_host, reason=reason,
        )
        self.transport.write(build_error(reason))
        self._close_after_error()

    def _close_after_error(self) -> None:
        """Send the Error and a FIN, but keep reading (and dropping) for a moment.

        Closing a socket with unread input makes the kernel send a reset, and a
        reset can destroy the Error reply before the peer reads it: a flooding
        client would never learn why. So only our side closes first; the peer's
        EOF, or ``LINGER_SECONDS``, ends the connection.
        """
        tls = is_tls(self.transport)
        if not tls and (
            not ITCPTransport.providedBy(self.transport) or not hasattr(self.transport, "loseWriteConnection")
        ):
            self.close()
            return
        transport: Any = self.transport
        self._unparsed = b""
        transport.unregisterProducer()
        self._linger_timer = self.clock.callLater(LINGER_SECONDS, transport.abortConnection)
        self.paused = False
        transport.resumeProducing()  # reading again, so the peer's EOF is seen
        if tls:
            # TLS sends close_notify after the reply and keeps reading for the peer's answer
            # (a half-close of the socket beneath would cut the encrypted reply off).
            transport.loseConnection()
        else:
            transport.loseWriteConnection()

    def _idle_check(self) -> None:
        """Close a connection that asks nothing and streams nothing: it only holds a slot."""
        self._idle_timer = None
        timeout = self.limits.idle_timeout
        now = self.clock.seconds()
        if self._closing():
            return
        if self.tcp_data is not None or self.udp_destination is not None or self.asked_state:
            due = timeout  # a streaming client legitimately never speaks: check again later
        else:
            due = self._last_request + timeout - now
            if due <= 0:
                self._violation(f"no request for {timeout:g} s; closing", key="idle")
                return
        self._idle_timer = self.clock.callLater(due, self._idle_check)

    # ------------------------------------------------------------ requests

    def _dispatch(self, message: ControlMessage) -> None:
        assert self.transport is not None
        self.requests += 1
        self._last_request = self.clock.seconds()
        if not self._budget.take():
            self._violation(f"too many requests (limit {self._budget.rate} per second)", key="flood")
            return
        handler = self._handlers.get(message.command)
        if handler is not None:
            reply = handler(message)
        else:
            extension = self.commands.get(message.command)
            if extension is not None:
                reply = extension(self, message)
            else:
                self.guard.log.emit(
                    ("unknown", self.peer_host), "unknown command {command!r} from {peer}",
                    level=LogLevel.info, command=message.command[:64], peer=self.peer_host,
                )
                reply = build_error()  # the reference's exact reply; the connection stays usable
        self.transport.write(reply)

    def _get_data_connection(self, message: ControlMessage) -> bytes:
        kind = message.parameter
        if kind not in ("TCP", "UDP"):
            return build_error("GetDataConnection needs the parameter TCP or UDP")
        if self._has_data_connection():
            return build_error("this control connection already has a data connection")
        if kind == "TCP":
            self.tcp_listener = self.data.open_tcp(
                self.peer_host, self.local_host, self._tcp_data_connected, self._tcp_data_lost
            )
            assert self.tcp_listener.port is not None
            port: int = self.tcp_listener.port.getHost().port  # type: ignore[attr-defined]
            return build_message(Command.DATA_CONNECTION_PORT, str(port))
        destination = self.data.open_udp(self.peer_host, self.local_host, customized=self._stream_custom is not None)
        if isinstance(destination, str):
            return build_error(destination)
        self.udp_destination = destination
        return build_message(Command.DATA_CONNECTION_PORT, str(destination.address[1]))

    def _start(self, message: ControlMessage) -> bytes:
        if not self._has_data_connection():
            return build_error("no data connection: send GetDataConnection first")
        self.started = True
        self._update_subscription()
        return OK_REPLY

    def _stop(self, message: ControlMessage) -> bytes:
        if not self._has_data_connection():
            return build_error("no data connection: send GetDataConnection first")
        self.started = False
        self._update_subscription()
        return OK_REPLY

    def _get_server_state_connection(self, message: ControlMessage) -> bytes:
        port = self.state.port_for(self.local_host)
        self.asked_state = True  # it may listen there only: not idle
        return build_message(Command.SERVER_STATE_CONNECTION_PORT, str(port))

    def _set_custom_signal_info(self, message: ControlMessage) -> bytes:
        """Validate and keep this connection's channel subset and downsampling (SPEC section 6).

        A document the server cannot honour gets the reference's ``ValidationError``
        with the reason as content (what its custom client shows); misuse of the
        session gets ``Error -- <reason>``. Either way the connection stays usable.
        """
        if self.custom is not None:
            return build_error("this connection already has a custom signal info; it cannot be changed")
        if self._has_data_connection():
            return build_error("SetCustomSignalInfo must come before GetDataConnection")
        try:
            custom = CustomSignalInfo.from_xml(message.content, self.metainfo)
        except CustomSignalInfoError as error:
            log.info("refused the custom signal info of {peer}: {reason}", peer=self.peer_host, reason=error)
            return build_message(Command.VALIDATION_ERROR, content=str(error).encode("utf-8"))
        self.custom = custom
        if not custom.is_identity(self.metainfo):  # an identity customization changes nothing
            self._stream_custom = custom
            self.metainfo_reply = build_message(Command.METAINFO, content=custom.metainfo(self.metainfo).to_xml())
        log.info("client {peer} customized its signals: {custom}", peer=self.peer_host, custom=custom.describe())
        return OK_REPLY

    # ------------------------------------------------------------ data plumbing

    def _has_data_connection(self) -> bool:
        return self.tcp_listener is not None or self.tcp_data is not None or self.udp_destination is not None

    def _tcp_data_connected(self, protocol: TCPDataProtocol) -> None:
        self.tcp_listener = None
        self.tcp_data = protocol
        log.info("data connection (TCP) from {peer}", peer=protocol.peer)
        self._update_subscription()

    def _tcp_data_lost(self, protocol: TCPDataProtocol) -> None:
        self.data.feed(protocol, self, self._stream_custom, False)
        if self.tcp_data is protocol:
            self.tcp_data = None
        log.info(
            "data connection (TCP) from {peer} closed after {packets} packets ({dropped} dropped)",
            peer=protocol.peer, packets=protocol.packets, dropped=protocol.dropped,
        )

    def _update_subscription(self) -> None:
        for target in (self.udp_destination, self.tcp_data):
            if target is not None:
                self.data.feed(target, self, self._stream_custom, self.started)


class ControlFactory(ServerFactory):
    """Admits control connections (allow-list, connection limits) and builds their sessions."""

    noisy = False

    def __init__(
        self,
        limits: ControlLimits,
        metainfo: MetaInfo,
        data: DataChannels,
        state: ServerStateChannel,
        commands: ControlCommands,
        clock: IReactorTime,
        guard: ConnectionGuard,
    ) -> None:
        self.limits, self.metainfo, self.data, self.state = limits, metainfo, data, state
        self.commands, self.clock, self.guard = commands, clock, guard
        self.sessions: set[ServerControlProtocol] = set()

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:  # type: ignore[override]
        """A control session; None outside the allow-list, an ``Error`` reply beyond the limits."""
        host = getattr(addr, "host", None)
        if not self.guard.admits(addr, "control"):
            return None
        from_host = sum(session.peer_host == host for session in self.sessions)
        refusal = self.guard.refusal(len(self.sessions), from_host, host, "control")
        if refusal is not None:
            return RefusalProtocol(refusal)
        return ServerControlProtocol(
            limits=self.limits, metainfo=self.metainfo, data=self.data, state=self.state,
            commands=self.commands, sessions=self.sessions, clock=self.clock, guard=self.guard,
        )
