"""The daemon as a Twisted service: sources, clock, hub and the three channels wired up.

``TiAService`` owns everything with a lifetime: it binds its ports in
``bind`` (``privilegedStartService`` under twistd, so a taken port fails
start-up), starts sources and the clock in ``startService``, and on a
graceful stop tells server-state clients ``ServerStateShutdown`` before
closing every connection.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger

import tia
from tia.config import ServerConfig
from tia.config.reader import place
from tia.protocol.control import GET_SERVER_STATUS, SERVER_STATUS, ControlMessage, build_message
from tia.server.clock import MasterClock, best_clock
from tia.server.control import ControlCommands, ControlFactory, ControlLimits, ServerControlProtocol
from tia.server.data import DataChannels
from tia.server.events import events_factory
from tia.server.guard import ConnectionGuard, exposure_warning
from tia.server.hub import StreamHub
from tia.server.listener import Listener
from tia.server.mtu import warn_if_fragmented
from tia.server.state import ServerStateChannel
from tia.server.status import ServerStatus, SignalStatus
from tia.sources import build_source
from tia.sources.base import ISource

if TYPE_CHECKING:
    from tia.server.tls import ServerTLS

log = Logger()

SHUTDOWN_GRACE_SECONDS = 2.0


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
        self.guard = ConnectionGuard(
            config.allow, config.max_connections, config.max_connections_per_host, config.peer_timeout
        )
        self.tls: ServerTLS | None = None  # [server] tls_*: every client-facing TCP port wrapped
        if config.tls is not None:
            from tia.server.tls import ServerTLS

            self.tls = ServerTLS(config.tls, reactor, self.guard, config.path)
        per_second = float(self.hub.packet_rate) * self.hub.max_packet_size
        backlog_bytes = max(int(config.backlog_seconds * per_second), 2 * self.hub.max_packet_size)
        self.data = DataChannels(self.hub, reactor, config.udp, backlog_bytes, self.tls, config.peer_timeout)
        self.state = ServerStateChannel(reactor, self.guard, self.tls)
        self.commands = ControlCommands()  # extensions of the control channel register here
        self.commands.register(GET_SERVER_STATUS, self._server_status_reply)
        limits = ControlLimits(
            config.max_line_length, config.max_content_length, config.request_rate, config.idle_timeout
        )
        self.factory = ControlFactory(
            limits, self.hub.metainfo, self.data, self.state, self.commands, reactor, self.guard
        )
        self.warn_exposure = warn_exposure
        where = place(config.path, "server", "control")
        self.control = Listener(config.control, self.listening_factory(self.factory, "control"), reactor, where)
        self.events: Listener | None = None  # [events] endpoint: posted event codes, off by default
        if config.events_endpoint is not None:
            where = place(config.path, "events", "endpoint")
            self.events = Listener(config.events_endpoint, events_factory(built, self.guard), reactor, where)
        self._started_at = time.monotonic()

    def listening_factory(self, factory: ServerFactory, channel: str) -> ServerFactory:
        """What a client-facing TCP port listens with: ``factory``, behind TLS when it is on."""
        return factory if self.tls is None else self.tls.wrap(factory, channel)

    def _server_status_reply(self, session: ServerControlProtocol, message: ControlMessage) -> bytes:
        """``GetServerStatus`` (txtia extension): ``status()`` as JSON, for ``tia monitor``."""
        return build_message(SERVER_STATUS, content=json.dumps(self.status().to_json()).encode("utf-8"))

    def status(self) -> ServerStatus:
        """What the daemon is doing now, as a read-only snapshot."""
        sender = self.data.udp_sender
        return ServerStatus(
            version=tia.__version__,
            uptime_seconds=time.monotonic() - self._started_at,
            packet_rate=float(self.hub.packet_rate),
            ticks_sent=self.hub.ticks_sent,
            late_ticks=self.clock.late_ticks,
            skipped_ticks=self.clock.skipped_ticks,
            control=self.config.control,
            udp_mode=self.config.udp.mode,
            udp_datagrams_sent=sender.sent if sender is not None else 0,
            udp_send_errors=sender.errors if sender is not None else 0,
            signals=tuple(
                SignalStatus(s.type.name, s.sampling_rate, s.block_size, s.num_channels, s.channel_names,
                             s.type.aperiodic)
                for s in self.hub.metainfo.signals
            ),
            sessions=tuple(sorted((s.status() for s in tuple(self.factory.sessions)), key=lambda s: s.peer)),
            sources=self.hub.source_health(),
        )

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
        except Exception:
            self._close_listeners()
            raise
        if self.data.udp_sender is not None:
            warn_if_fragmented(self.hub.max_packet_size, self.config.udp)
        super().startService()  # children (sinks) subscribe before the first tick
        self._started_at = time.monotonic()
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
        children (sinks) stop after the last tick, so recordings end complete. Stopping a
        stopped service (a fatal source stopped it, then twistd stops everything) does nothing."""
        if not self.running:
            return defer.succeed(None)
        log.info("TiA server stopping")
        self.state.announce_shutdown()
        self.clock.stop()
        close = getattr(self._own_clock, "close", None)
        if close is not None:
            close()  # PreciseClock's timerfd; a restart reopens it
        waiting: list[Deferred[Any]] = [client.closed for client in self.state.clients]
        for session in tuple(self.factory.sessions):
            waiting.append(session.closed)
            session.close()  # unregisters itself as producer first: TLS would wait for that
        self.state.stop_listening()
        waiting.append(self.data.stop())
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
        for session in tuple(self.factory.sessions):
            if session.transport is not None:
                session.transport.abortConnection()  # type: ignore[attr-defined]
        for client in tuple(self.state.clients):
            if client.transport is not None:
                client.transport.abortConnection()  # type: ignore[attr-defined]

    def _fatal(self, reason: str) -> None:
        """A source asked for the server to stop: its owner decides how (twistd: the process)."""
        log.critical("stopping the server: {reason}", reason=reason)
        if self._on_fatal is not None:
            self._on_fatal(reason)
        elif self.running:
            self.stopService()
