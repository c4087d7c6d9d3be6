"""The control channel: bytes go to the sans-IO parser, its messages to the handlers.

One ``TiAControlProtocol`` per client holds that client's session: its data
connection (TCP or UDP), whether it is streaming, its custom signal info if
it asked for one (SPEC section 6), and nothing else. Every
reply is built by ``tia.protocol.control`` and written in one ``write``,
because some peers read a reply with a single ``recv``.

Hostile or broken peers are bounded here (see ``tia.server.guard``): framing
violations get ``Error -- <reason>`` and a close; more than ``request_rate``
requests per second likewise; a connection without a request for
``idle_timeout`` seconds that has no data connection is closed; and a peer
that does not read its replies is not read either (the protocol is a
streaming producer of its own transport), so replies never pile up.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTCP, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger, LogLevel
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
from tia.server.data import TCPDataListener, TCPDataProtocol, UDPDestination, free_udp_port
from tia.server.guard import RequestBudget, harden_tcp, is_tls

if TYPE_CHECKING:
    from tia.server.service import TiAServerFactory

log = Logger()

ControlHandler = Callable[["TiAControlProtocol", ControlMessage], bytes]
"""An extension command: the session it came on and the request, to the whole reply (built by
``tia.protocol.control``)."""


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


TIA_COMMANDS = frozenset({
    Command.CHECK_PROTOCOL_VERSION, Command.GET_METAINFO, Command.GET_DATA_CONNECTION,
    Command.START_DATA_TRANSMISSION, Command.STOP_DATA_TRANSMISSION, Command.GET_SERVER_STATE_CONNECTION,
    Command.SET_CUSTOM_SIGNAL_INFO,
})

LINGER_SECONDS = 2.0  # after an Error and our FIN, how long the peer may take to close its side
TLS_HANDSHAKE = b"\x16"  # the first byte of a TLS client's hello (a record of type handshake)


@implementer(IPushProducer)
class TiAControlProtocol(Protocol):
    def __init__(self, server: TiAServerFactory) -> None:
        self.server = server
        config = server.config
        self.parser = ControlParser(config.max_line_length, config.max_content_length)
        self.peer_host = "?"
        self.local_host = "127.0.0.1"
        self.started = False
        self.tcp_listener: TCPDataListener | None = None
        self.tcp_data: TCPDataProtocol | None = None
        self.udp_destination: UDPDestination | None = None
        self.custom: CustomSignalInfo | None = None
        self._custom_metainfo_reply: bytes | None = None
        self.asked_state = False
        self.requests = 0
        self.closed: Deferred[None] = Deferred()
        self._budget = RequestBudget(config.request_rate, server.reactor.seconds)
        self._pending: deque[ControlMessage] = deque()  # parsed, not yet answered (output paused)
        self._violation_pending: str | None = None
        self._paused = False
        self._idle_timer: IDelayedCall | None = None
        self._linger_timer: IDelayedCall | None = None  # set while closing after an Error
        self._last_request = 0.0
        self._received = False
        self._handlers: dict[str, Callable[[ControlMessage], bytes]] = {
            Command.CHECK_PROTOCOL_VERSION: lambda message: OK_REPLY,
            Command.GET_METAINFO: lambda message: self._custom_metainfo_reply or self.server.metainfo_reply,
            Command.GET_DATA_CONNECTION: self._get_data_connection,
            Command.START_DATA_TRANSMISSION: self._start,
            Command.STOP_DATA_TRANSMISSION: self._stop,
            Command.GET_SERVER_STATE_CONNECTION: self._get_server_state_connection,
            Command.SET_CUSTOM_SIGNAL_INFO: self._set_custom_signal_info,
        }

    # ------------------------------------------------------------ framing

    def connectionMade(self) -> None:
        assert self.transport is not None
        peer, local = self.transport.getPeer(), self.transport.getHost()
        self.peer_host = getattr(peer, "host", "?")
        self.local_host = getattr(local, "host", "127.0.0.1")
        self.server.controls.add(self)
        harden_tcp(self.transport, self.server.config.peer_timeout)
        # Replies wait in Twisted's buffer while the peer does not read; past its
        # bufferSize we are paused and stop reading the peer's requests in turn.
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self._last_request = self.server.reactor.seconds()
        if self.server.config.idle_timeout:
            self._idle_timer = self.server.reactor.callLater(self.server.config.idle_timeout, self._idle_check)
        log.info("control connection from {peer}", peer=f"{self.peer_host}:{getattr(peer, 'port', '?')}")

    def dataReceived(self, data: bytes) -> None:
        if self._closing():
            return  # also what a peer sends after its Error reply: read and dropped
        if not self._received and data:
            self._received = True
            if data[:1] == TLS_HANDSHAKE and not is_tls(self.transport):
                # a TLS client's hello may hold no newline: it would wait for ever for an answer
                self._violation("TLS is off on this server: connect without TLS", key="tls hello")
                return
        try:
            self._pending.extend(self.parser.feed(data))  # linear in the chunk, bounded per line
        except ControlProtocolError as error:
            self._pending.extend(error.messages)  # answer what came before the violation
            self._violation_pending = str(error)
        self._answer_pending()

    def _answer_pending(self) -> None:
        while self._pending and not self._paused and not self._closing():
            self._dispatch(self._pending.popleft())
        if self._violation_pending is not None and not self._pending:
            reason, self._violation_pending = self._violation_pending, None
            self._violation(reason)

    # IPushProducer: Twisted pauses us while our replies are not being read

    def pauseProducing(self) -> None:
        self._paused = True
        if self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        self._paused = False
        if self.transport is None:
            return
        if self._closing():
            self.transport.unregisterProducer()  # type: ignore[attr-defined]  # lets the close finish
            return
        self.transport.resumeProducing()  # type: ignore[attr-defined]
        self._answer_pending()

    def stopProducing(self) -> None:
        self._pending.clear()

    def _closing(self) -> bool:
        transport: Any = self.transport
        return transport is None or bool(transport.disconnecting) or self._linger_timer is not None

    def close(self) -> None:
        """Close after the buffered replies (a registered producer would hold the close back)."""
        if self._closing():
            return
        assert self.transport is not None
        self._pending.clear()
        self.transport.unregisterProducer()  # type: ignore[attr-defined]
        self.transport.loseConnection()

    def _violation(self, reason: str, key: str = "violation") -> None:
        """Framing is lost (or the peer is abusive): say why, then close."""
        if self._closing():
            return
        assert self.transport is not None
        self.server.guard.log.emit(
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
        self._pending.clear()
        transport.unregisterProducer()
        self._linger_timer = self.server.reactor.callLater(LINGER_SECONDS, transport.abortConnection)
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
        timeout = self.server.config.idle_timeout
        now = self.server.reactor.seconds()
        if self._closing():
            return
        if self.tcp_data is not None or self.udp_destination is not None or self.asked_state:
            due = timeout  # a streaming client legitimately never speaks: check again later
        else:
            due = self._last_request + timeout - now
            if due <= 0:
                self._violation(f"no request for {timeout:g} s; closing", key="idle")
                return
        self._idle_timer = self.server.reactor.callLater(due, self._idle_check)

    def _dispatch(self, message: ControlMessage) -> None:
        assert self.transport is not None
        self.requests += 1
        self._last_request = self.server.reactor.seconds()
        if not self._budget.take():
            self._violation(f"too many requests (limit {self._budget.rate} per second)", key="flood")
            return
        handler = self._handlers.get(message.command)
        if handler is not None:
            reply = handler(message)
        else:
            extension = self.server.commands.get(message.command)
            if extension is not None:
                reply = extension(self, message)
            else:
                self.server.guard.log.emit(
                    ("unknown", self.peer_host), "unknown command {command!r} from {peer}",
                    level=LogLevel.info, command=message.command[:64], peer=self.peer_host,
                )
                reply = build_error()  # the reference's exact reply; the connection stays usable
        self.transport.write(reply)

    # ------------------------------------------------------------ commands

    def _get_data_connection(self, message: ControlMessage) -> bytes:
        kind = message.parameter
        if kind not in ("TCP", "UDP"):
            return build_error("GetDataConnection needs the parameter TCP or UDP")
        if self.tcp_listener is not None or self.tcp_data is not None or self.udp_destination is not None:
            return build_error("this control connection already has a data connection")
        if kind == "TCP":
            port = self._open_tcp_data()
        else:
            result = self._open_udp_data()
            if isinstance(result, bytes):
                return result
            port = result
        return build_message(Command.DATA_CONNECTION_PORT, str(port))

    def _open_tcp_data(self) -> int:
        listener = TCPDataListener(
            self.peer_host, self.server.backlog_bytes, self._tcp_data_connected, self._tcp_data_lost,
            self.server.config.peer_timeout,
        )
        reactor: IReactorTCP = self.server.reactor  # type: ignore[assignment]
        listener.port = reactor.listenTCP(
            0, self.server.listening_factory(listener, "data"), interface=self.local_host
        )
        self.tcp_listener = listener
        port: int = listener.port.getHost().port  # type: ignore[attr-defined]
        return port

    def _open_udp_data(self) -> int | bytes:
        udp = self.server.config.udp
        if self.server.tls is not None:
            return build_error(
                "UDP data is not encrypted, so it is switched off while TLS is on; ask for TCP"
            )
        if self.server.udp_sender is None:
            return build_error("UDP data is switched off on this server (udp mode = off)")
        if udp.mode == "unicast":
            port = udp.port or free_udp_port(self.local_host)
            self.udp_destination = UDPDestination(self.server.udp_sender, (self.peer_host, port))
            return port
        assert udp.address is not None and self.server.udp_group is not None
        if self._custom_metainfo_reply is not None:  # an identity customization changes nothing
            return build_error(
                f"custom signal info cannot be sent over UDP {udp.mode}: all UDP clients of this server"
                " share one datagram stream; ask for TCP instead"
            )
        if udp.mode == "broadcast" and not _same_subnet_24(udp.address, self.peer_host):
            return build_error("Target and remote subnet do not match!")
        self.udp_destination = self.server.udp_group
        return udp.port

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
        port = self.server.state.port_for(self.local_host)
        self.asked_state = True  # it may listen there only: not idle
        return build_message(Command.SERVER_STATE_CONNECTION_PORT, str(port))

    # ------------------------------------------------------------ custom signal info

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
        server = self.server.hub.metainfo
        try:
            custom = CustomSignalInfo.from_xml(message.content, server)
        except CustomSignalInfoError as error:
            log.info("refused the custom signal info of {peer}: {reason}", peer=self.peer_host, reason=error)
            return build_message(Command.VALIDATION_ERROR, content=str(error).encode("utf-8"))
        self.custom = custom
        if not custom.is_identity(server):
            self._custom_metainfo_reply = build_message(Command.METAINFO, content=custom.metainfo(server).to_xml())
        log.info("client {peer} customized its signals: {custom}", peer=self.peer_host, custom=custom.describe())
        return OK_REPLY

    def _feed(self, target: TCPDataProtocol | UDPDestination, streaming: bool) -> None:
        """Start or stop feeding ``target``: the server's stream, or this connection's customization of it."""
        if self.custom is not None and self._custom_metainfo_reply is not None:
            streams = self.server.custom_streams
            (streams.subscribe if streaming else streams.unsubscribe)(self.custom, target)
        else:
            hub = self.server.hub
            (hub.subscribe if streaming else hub.unsubscribe)(target)

    # ------------------------------------------------------------ data plumbing

    def _has_data_connection(self) -> bool:
        return self.tcp_listener is not None or self.tcp_data is not None or self.udp_destination is not None

    def _tcp_data_connected(self, protocol: TCPDataProtocol) -> None:
        self.tcp_listener = None
        self.tcp_data = protocol
        log.info("data connection (TCP) from {peer}", peer=protocol.peer)
        self._update_subscription()

    def _tcp_data_lost(self, protocol: TCPDataProtocol) -> None:
        self._feed(protocol, False)
        if self.tcp_data is protocol:
            self.tcp_data = None
        log.info(
            "data connection (TCP) from {peer} closed after {packets} packets ({dropped} dropped)",
            peer=protocol.peer, packets=protocol.packets, dropped=protocol.dropped,
        )

    def _update_subscription(self) -> None:
        if self.udp_destination is not None and self.udp_destination is self.server.udp_group:
            self.server.set_group_member(self, self.started)
        elif self.udp_destination is not None:
            self._feed(self.udp_destination, self.started)
        if self.tcp_data is not None:
            self._feed(self.tcp_data, self.started)

    def connectionLost(self, reason: Failure | None = None) -> None:
        for timer in (self._idle_timer, self._linger_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._idle_timer = None
        self._pending.clear()
        self.started = False
        self._update_subscription()
        if self.tcp_listener is not None:
            self.tcp_listener.close()
            self.tcp_listener = None
        if self.tcp_data is not None:
            self.tcp_data.close(self.server.reactor)
        self.udp_destination = None
        self.server.controls.discard(self)
        log.info("control connection from {peer} closed", peer=self.peer_host)
        self.closed.callback(None)


def _same_subnet_24(address: str, peer: str) -> bool:
    """The reference's broadcast rule: the client must be in the /24 of the broadcast address."""
    try:
        network = ipaddress.IPv4Network(f"{address}/24", strict=False)
        return ipaddress.IPv4Address(peer) in network
    except ValueError:
        return False
