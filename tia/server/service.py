"""The daemon as a Twisted service: sources, clock, hub and the three channels wired up.

``TiAService`` owns everything with a lifetime: it binds its ports in
``bind`` (``privilegedStartService`` under twistd, so a taken port fails
start-up), starts sources and the clock in ``startService``, and on a
graceful stop tells server-state clients ``ServerStateShutdown`` before
closing every connection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IReactorTCP,
    IReactorTime,
    IReactorUDP,
)
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from tia.config import ServerConfig
from tia.protocol.control import SERVER_STATE_RUNNING, SERVER_STATE_SHUTDOWN, Command, build_message
from tia.server.clock import MasterClock, best_clock
from tia.server.control import ControlCommands, TiAControlProtocol
from tia.server.custom import CustomStreams
from tia.server.data import UDPDestination, UDPSender
from tia.server.events import events_factory
from tia.server.guard import ConnectionGuard, RefusalProtocol, exposure_warning, harden_tcp
from tia.server.hub import StreamHub
from tia.server.listener import Listener
from tia.server.mtu import warn_if_fragmented
from tia.sources import build_source
from tia.sources.base import ISource

if TYPE_CHECKING:
    from tia.server.tls import ServerTLS

log = Logger()

SHUTDOWN_GRACE_SECONDS = 2.0


class ServerStateProtocol(Protocol):
    """Pushes server state; the client never writes."""

    def __init__(self, channel: ServerStateChannel) -> None:
        self.channel = channel
        self.host: str | None = None
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        harden_tcp(self.transport, self.channel.guard.peer_timeout)  # a vanished listener is dropped
        self.host = getattr(self.transport.getPeer(), "host", None)
        self.channel.clients.add(self)
        self.transport.write(SERVER_STATE_RUNNING)

    def dataReceived(self, data: bytes) -> None:
        """Nothing is expected from the client here."""

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.channel.clients.discard(self)
        self.closed.callback(None)


class ServerStateChannel(ServerFactory):
    """One server-state port per local interface, opened when first asked for."""

    noisy = False

    def __init__(
        self, reactor: IReactorTCP, guard: ConnectionGuard | None = None, tls: ServerTLS | None = None
    ) -> None:
        self.reactor = reactor
        self.guard = guard or ConnectionGuard()
        self.clients: set[ServerStateProtocol] = set()
        self.ports: dict[str, IListeningPort] = {}
        self._listening: ServerFactory = self if tls is None else tls.wrap(self, "server-state")

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        """None (the connection is closed at once) outside the allow-list or beyond the limits."""
        host = getattr(addr, "host", None)
        if not self.guard.admits(addr, "server-state"):
            return None
        from_host = sum(client.host == host for client in self.clients)
        if self.guard.refusal(len(self.clients), from_host, host, "server-state") is not None:
            return None
        return ServerStateProtocol(self)

    def port_for(self, host: str) -> int:
        if host not in self.ports:
            self.ports[host] = self.reactor.listenTCP(0, self._listening, interface=host)
        port: int = self.ports[host].getHost().port  # type: ignore[attr-defined]
        return port

    def announce_shutdown(self) -> None:
        for client in tuple(self.clients):
            if client.transport is not None:
                client.transport.write(SERVER_STATE_SHUTDOWN)
                client.transport.loseConnection()

    def stop_listening(self) -> None:
        for port in self.ports.values():
            port.stopListening()
        self.ports.clear()


class TiAServerFactory(ServerFactory):
    """Per-server state shared by all control connections."""

    noisy = False

    protocol = TiAControlProtocol

    def __init__(
        self, config: ServerConfig, hub: StreamHub, reactor: Any, commands: ControlCommands | None = None
    ) -> None:
        self.config = config
        self.hub = hub
        self.reactor = reactor
        self.commands = commands or ControlCommands()
        self.controls: set[TiAControlProtocol] = set()
        self.metainfo_reply = build_message(Command.METAINFO, content=hub.metainfo.to_xml())
        self.custom_streams = CustomStreams(hub)  # SetCustomSignalInfo: one stream per distinct request
        per_second = float(hub.packet_rate) * hub.max_packet_size
        self.backlog_bytes = max(int(config.backlog_seconds * per_second), 2 * hub.max_packet_size)
        self.guard = ConnectionGuard(
            config.allow, config.max_connections, config.max_connections_per_host, config.peer_timeout
        )
        self.tls: ServerTLS | None = None  # [server] tls_*: every client-facing TCP port wrapped
        if config.tls is not None:
            from tia.server.tls import ServerTLS

            self.tls = ServerTLS(config.tls, reactor, self.guard, config.path)
        self.state = ServerStateChannel(reactor, self.guard, self.tls)
        self.udp_sender: UDPSender | None = None
        self.udp_group: UDPDestination | None = None
        self._group_members: set[TiAControlProtocol] = set()
        udp = config.udp
        if udp.mode != "off" and self.tls is None:  # UDP cannot be encrypted: off while TLS is on
            self.udp_sender = UDPSender(udp.mode == "broadcast", udp.ttl, udp.interface)
            if udp.mode in ("broadcast", "multicast"):
                assert udp.address is not None
                self.udp_group = UDPDestination(self.udp_sender, (udp.address, udp.port))

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:  # type: ignore[override]
        """A control session; None outside the allow-list, an ``Error`` reply beyond the limits."""
        host = getattr(addr, "host", None)
        if not self.guard.admits(addr, "control"):
            return None
        from_host = sum(control.peer_host == host for control in self.controls)
        refusal = self.guard.refusal(len(self.controls), from_host, host, "control")
        if refusal is not None:
            return RefusalProtocol(refusal)
        return TiAControlProtocol(self)

    def listening_factory(self, factory: ServerFactory, channel: str) -> ServerFactory:
        """What a client-facing TCP port listens with: ``factory``, behind TLS when it is on."""
        return factory if self.tls is None else self.tls.wrap(factory, channel)

    def set_group_member(self, control: TiAControlProtocol, streaming: bool) -> None:
        """The shared broadcast/multicast stream flows while any of its clients is started."""
        assert self.udp_group is not None
        (self._group_members.add if streaming else self._group_members.discard)(control)
        if self._group_members:
            self.hub.subscribe(self.udp_group)
        else:
            self.hub.unsubscribe(self.udp_group)


class TiAService(MultiService):
    """The daemon's core: sources, clock, hub, the control, data and server-state channels, and
    the ``[events]`` endpoint. Optional parts (web monitor, recording, LSL outlets) attach
    themselves as child services and control commands (``tia.daemon.build_service``).

    ``sources`` overrides the configured ones (the seed-compatible API). ``on_fatal(reason)``
    is called when a source asks for the server to stop (``on_error`` / ``on_end =
    stop-server``): under twistd it stops the process; by default the service stops itself.
    """

    def __init__(
        self,
        config: ServerConfig,
        reactor: Any = None,
        sources: Sequence[ISource] | None = None,
        clock: IReactorTime | None = None,
        *,
        warn_exposure: bool = True,
        on_fatal: Callable[[str], object] | None = None,
    ) -> None:
        """``warn_exposure=False``: the caller says itself that the port is reachable from afar."""
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        built = list(sources) if sources is not None else [build_source(s) for s in config.sources]
        self.hub = StreamHub(built, config.subject, on_fatal=self._fatal, sample_order=config.sample_order)
        self._on_fatal = on_fatal
        self._own_clock: IReactorTime | None = None  # built here, so released here
        if clock is None:
            clock = self._own_clock = best_clock(reactor)
        self.clock = MasterClock(self.hub.packet_rate, self.hub.run, clock, config.stall_policy)
        self.commands = ControlCommands()  # extensions of the control channel register here
        self.factory = TiAServerFactory(config, self.hub, reactor, self.commands)
        self.warn_exposure = warn_exposure
        where = f"{config.path} [server] control" if config.path else "[server] control"
        self.control = Listener(config.control, self.factory.listening_factory(self.factory, "control"),
                                reactor, where)
        self.events: Listener | None = None  # [events] endpoint: posted event codes, off by default
        if config.events_endpoint is not None:
            where = f"{config.path} [events] endpoint" if config.path else "[events] endpoint"
            self.events = Listener(config.events_endpoint, events_factory(built, self.factory.guard), reactor, where)
        self._udp_port: IListeningPort | None = None

    @property
    def control_port(self) -> int:
        """The bound control port (useful with ``tcp:0``)."""
        port: int = self.control.address.port  # type: ignore[attr-defined]
        return port

    @property
    def events_port(self) -> int:
        """The bound events port (useful with ``tcp:0``)."""
        assert self.events is not None
        port: int = self.events.address.port  # type: ignore[attr-defined]
        return port

    def bind(self) -> None:
        """Listen on the control and ``[events]`` endpoints and ask every child service with a
        ``bind()`` (the web monitor) to do the same: a taken port fails here, with
        ``ListenError``, before any source or socket is opened. Idempotent."""
        try:
            self.control.bind()
            if self.events is not None:
                self.events.bind()
            for child in self:
                bind = getattr(child, "bind", None)
                if bind is not None:
                    bind()
        except Exception:
            self._close_listeners()
            raise

    def privilegedStartService(self) -> None:
        """twistd calls this before dropping privileges: bind the ports now."""
        self.bind()
        super().privilegedStartService()

    def startService(self) -> None:
        """Bind first (a taken port fails before any source or socket is opened), then stream."""
        self.bind()
        try:
            self.hub.start_sources()
            if self.factory.udp_sender is not None:
                udp_reactor: IReactorUDP = self.reactor
                interface = self.config.udp.interface or ""
                self._udp_port = udp_reactor.listenUDP(
                    0, self.factory.udp_sender, interface=interface, maxPacketSize=8192
                )
                warn_if_fragmented(self.hub.max_packet_size, self.config.udp)
        except Exception:
            self._close_listeners()
            raise
        super().startService()  # children (sinks) subscribe before the first tick
        self.clock.start()
        tls = self.config.tls
        exposed = exposure_warning(self.config.control, "off" if tls is None else tls.mode)
        if exposed is not None and self.warn_exposure:
            log.warn("{warning}", warning=exposed)
        if tls is not None:
            log.info(
                "TLS on control, data and server-state connections ({who}){udp}",
                who="clients need a certificate from " + tls.client_ca if tls.client_ca else "any client",
                udp="; UDP data is off (it cannot be encrypted)" if self.config.udp.mode != "off" else "",
            )
        log.info(
            "TiA server streaming {signals} at {rate} packets/s on {control}",
            signals=", ".join(
                f"{s.type.name} {s.num_channels}ch@{s.sampling_rate:g}Hz/{s.block_size}"
                for s in self.hub.metainfo.signals
            ),
            rate=float(self.hub.packet_rate), control=self.config.control,
        )

    def stopService(self) -> Deferred[None]:
        """Graceful stop: state clients hear ``ServerStateShutdown`` before anything closes;
        children (sinks) stop after the last tick, so recordings end complete."""
        log.info("TiA server stopping")
        self.factory.state.announce_shutdown()
        self.clock.stop()
        close = getattr(self._own_clock, "close", None)
        if close is not None:
            close()  # PreciseClock's timerfd; a restart reopens it
        waiting: list[Deferred[Any]] = [client.closed for client in self.factory.state.clients]
        for control in tuple(self.factory.controls):
            waiting.append(control.closed)
            control.close()  # unregisters itself as producer first: TLS would wait for that
        self.factory.state.stop_listening()
        if self._udp_port is not None:
            waiting.append(defer.maybeDeferred(self._udp_port.stopListening))
            self._udp_port = None
        waiting.extend(self._close_listeners())
        waiting.append(defer.maybeDeferred(super().stopService))
        done: Deferred[Any] = defer.DeferredList(waiting, consumeErrors=True)
        timer = self.reactor.callLater(SHUTDOWN_GRACE_SECONDS, self._abort_connections)
        done.addBoth(lambda _: timer.cancel() if timer.active() else None)
        done.addBoth(lambda _: self.hub.stop_sources())
        return done

    def _close_listeners(self) -> list[Deferred[None]]:
        closing = [self.control.close()]
        if self.events is not None:
            closing.append(self.events.close())
        return closing

    def _abort_connections(self) -> None:
        for control in tuple(self.factory.controls):
            if control.transport is not None:
                control.transport.abortConnection()  # type: ignore[attr-defined]
        for client in tuple(self.factory.state.clients):
            if client.transport is not None:
                client.transport.abortConnection()  # type: ignore[attr-defined]

    def _fatal(self, reason: str) -> None:
        """A source asked for the server to stop: its owner decides how (twistd: the process)."""
        log.critical("stopping the server: {reason}", reason=reason)
        if self._on_fatal is not None:
            self._on_fatal(reason)
        elif self.running:
            self.stopService()
