"""``TiAStream``: a whole TiA session on the Twisted client, optionally reconnecting.

The session is the version check, metainfo, optional customization, data
connection (TCP connected or UDP listened), optional server-state channel,
start, and at the end stop. With ``reconnect=True`` a ``ClientService``
re-establishes a lost session with backoff, and the time lost across the gap
is reported from the server's packet ids (its tick numbers). Every bit of
timing goes through the injected reactor, so tests drive it with
``task.Clock`` / ``MemoryReactor``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocolFactory,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from tia.client.control import ControlFactory, DataTransport, TiAControlProtocol, endpoint_for
from tia.client.data import (
    UDP_MAX_PACKET_SIZE,
    GapCallback,
    PacketCallback,
    StateCallback,
    TiAServerStateProtocol,
    TiATCPDataProtocol,
    TiAUDPDataProtocol,
    deliver,
)
from tia.client.errors import TiAClientError, TiAConnectionLost
from tia.client.sequence import PacketSequence
from tia.client.shims import Clock, Endpoint, ListeningPort, UDPReactor, transport_of
from tia.client.tls import TLSSettings
from tia.protocol.custom import CustomSpec
from tia.protocol.metainfo import MetaInfo
from tia.protocol.packet import DataPacket, is_sample_major

__all__ = ["TiAStream"]


@dataclass(eq=False)
class _Session:
    """One control connection and everything hanging off it."""

    control: TiAControlProtocol
    metainfo: MetaInfo | None = None
    tcp_data: TiATCPDataProtocol | None = None
    udp_data: TiAUDPDataProtocol | None = None
    udp_port: ListeningPort | None = None
    state: TiAServerStateProtocol | None = None
    started: bool = False
    ended: bool = False
    first_packet_seen: bool = False
    last_packet: float = 0.0  # reactor time of the last packet (or of the start)
    watchdog: IDelayedCall | None = None  # ends the session after data_timeout s without a packet
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
        sample_order: str = "channel-major",
        dataTimeout: float | None = 10.0,
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
        data cannot be encrypted, so it is refused with TLS. ``sample_order`` is
        how the server lays out each signal's samples (``channel-major``, the
        default and libtia's, or ``sample-major`` for a txtia server with
        ``[server] sample_order = sample-major``); packets carry (channels,
        block size) arrays either way. ``dataTimeout``: a streaming session
        without a packet for that many seconds (at least three packet periods)
        is lost, as if its connections had closed: a server host or path that
        vanished sends no FIN, so without it the stream would wait for ever;
        None turns it off.
        """
        if transport not in ("TCP", "UDP"):
            raise ValueError(f"transport must be 'TCP' or 'UDP', not {transport!r}")
        if customize is not None and customSignalInfo is not None:
            raise ValueError("give customize or customSignalInfo, not both")
        if tls is not None and transport == "UDP":
            raise ValueError("UDP data cannot be encrypted: use transport='TCP' with TLS")
        is_sample_major(sample_order)  # a ValueError now rather than in the session set-up
        self._reactor = reactor
        self._clock = cast(IReactorTime, reactor)
        self._endpoint, self._tls_options = endpoint_for(reactor, endpoint, tls)
        self.transport: DataTransport = transport
        self.on_packet = onPacket
        self.on_server_state = onServerState
        self.on_gap = onGap
        self.on_reconnect = onReconnect
        self.on_disconnect = onDisconnect
        self.reconnect = reconnect
        self.timeout = timeout
        self.udp_interface = udpInterface
        self.data_host = dataHost
        self.custom_signal_info = customSignalInfo
        self.customize = customize
        self.sample_order = sample_order
        self.data_timeout = dataTimeout
        self._policy = retryPolicy or backoffPolicy()

        self.metainfo: MetaInfo | None = None
        """The metainfo of the current (or last) session."""
        self.reconnections = 0
        self.ticks_lost = 0
        """Packets (server ticks) lost across reconnections so far, when known."""
        self.sequence: PacketSequence | None = None
        """The packet numbers of the current (or last) data connection: gaps, late and repeated packets."""

        self._session: _Session | None = None
        self._service: ClientService | None = None
        self._starting: Deferred[MetaInfo] | None = None
        self._stop_waiters: list[Deferred[None]] | None = None
        self._stopped = False
        self._failed_sessions = 0
        self._last_packet_id: int | None = None
        self._last_packet_time = 0.0
        self._awaiting_resume = False

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
        if self._stop_waiters is not None and not self._stopped:
            return defer.fail(TiAClientError("TiAStream.stop() is still in progress"))
        self._stop_waiters, self._stopped = None, False
        starting: Deferred[MetaInfo] = Deferred()
        self._starting = starting
        factory = ControlFactory(self._control_connected)
        if self.reconnect:
            service = ClientService(
                cast(IStreamClientEndpoint, self._endpoint),
                cast(IProtocolFactory, factory),
                retryPolicy=self._retry_delay,
                clock=self._clock,
            )
            self._service = service
            service.startService()
            service.whenConnected(failAfterFailures=1).addErrback(self._first_connect_failed)
        else:
            self._endpoint.connect(factory).addErrback(self._first_connect_failed)
        return starting

    def _retry_delay(self, attempt: int) -> float:
        """Sessions that connect but fail to set up also count as failed attempts."""
        return self._policy(attempt + self._failed_sessions)

    def _first_connect_failed(self, failure: Failure) -> None:
        if self._starting is not None and not self._starting.called:
            self._log.error(
                "cannot connect to the TiA server: {error}", error=failure.getErrorMessage()
            )
            # We are inside ClientService's state machine: stop it on the next turn.
            self._fail_start(failure, stop_later=True)

    def _fail_start(self, failure: Failure, stop_later: bool = False) -> None:
        starting, self._starting = self._starting, None
        service, self._service = self._service, None
        if service is not None:
            if stop_later:
                cast(Clock, self._clock).callLater(0, service.stopService)
            else:
                service.stopService()
        if starting is not None and not starting.called:
            starting.errback(failure)

    def _control_connected(self, control: TiAControlProtocol) -> None:
        if self._stop_waiters is not None:
            transport = transport_of(control)
            if transport is not None:
                transport.loseConnection()
            return
        session = _Session(control)
        self._session = session

        def control_closed(_: None) -> None:
            self._session_lost(session, control.close_reason or connectionDone)

        control.whenClosed().addCallback(control_closed)
        setup = Deferred.fromCoroutine(self._set_up(session))
        if self.timeout is not None:
            setup.addTimeout(self.timeout, self._clock)
        setup.addCallbacks(
            lambda metainfo: self._set_up_done(session, metainfo),
            lambda failure: self._set_up_failed(session, failure),
        )

    async def _set_up(self, session: _Session) -> MetaInfo:
        control = session.control
        await control.checkProtocolVersion()
        metainfo = await control.getMetaInfo()
        host = self.data_host or self._peer_host(control)
        if self.customize is not None or self.custom_signal_info is not None:
            if self.customize is not None:
                await control.customize(self.customize, metainfo)
            else:
                assert self.custom_signal_info is not None
                await control.setCustomSignalInfo(self.custom_signal_info)
            metainfo = await control.getMetaInfo()  # what this connection will receive
        session.metainfo = metainfo
        if self.on_server_state is not None:
            state_port = await control.getServerStateConnection()
            state = TiAServerStateProtocol(self.on_server_state)
            await self._connect_tcp(host, state_port, state)
            session.state = state
        port = await control.getDataConnection(self.transport)

        def on_packet(packet: DataPacket) -> None:
            self._packet_received(session, packet)

        if self.transport == "TCP":
            data = TiATCPDataProtocol(on_packet, self.on_gap, sample_order=self.sample_order)
            self.sequence = data.gaps
            await self._connect_tcp(host, port, data)
            session.tcp_data = data
            data.whenClosed().addBoth(lambda result: self._data_lost(session, result))
        else:
            udp = TiAUDPDataProtocol(on_packet, self.on_gap, sample_order=self.sample_order)
            self.sequence = udp.gaps
            session.udp_data = udp
            session.udp_port = cast(UDPReactor, self._reactor).listenUDP(
                port, udp, interface=self.udp_interface, maxPacketSize=UDP_MAX_PACKET_SIZE
            )
        if session.ended:
            raise TiAConnectionLost("the session ended during set-up")
        await control.start()
        session.started = True
        return metainfo

    async def _connect_tcp(self, host: str, port: int, protocol: TwistedProtocol) -> None:
        endpoint_class = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
        endpoint: IStreamClientEndpoint = endpoint_class(self._reactor, host, port)
        if self._tls_options is not None:
            endpoint = wrapClientTLS(self._tls_options, endpoint)
        await cast(Endpoint, endpoint).connect(Factory.forProtocol(lambda: protocol))

    @staticmethod
    def _peer_host(control: TiAControlProtocol) -> str:
        transport = transport_of(control)
        peer = transport.getPeer() if transport is not None else None
        if isinstance(peer, IPv4Address | IPv6Address):
            return str(peer.host)
        raise TiAClientError(f"cannot tell the data host from the control peer {peer!r}")

    def _set_up_done(self, session: _Session, metainfo: MetaInfo) -> None:
        self._failed_sessions = 0
        session.last_packet = cast(Clock, self._clock).seconds()
        self._watch(session)
        if self.metainfo is not None and self.metainfo != metainfo:
            self._log.warn("the server's metainfo changed across the reconnection")
        self.metainfo = metainfo
        self._log.info(
            "streaming {signals} over {transport} from {peer}",
            signals=[s.type.name for s in metainfo.signals],
            transport=self.transport,
            peer=session.control.peer,
        )
        starting, self._starting = self._starting, None
        if starting is not None and not starting.called:
            starting.callback(metainfo)

    def _set_up_failed(self, session: _Session, failure: Failure) -> None:
        self._log.error(
            "TiA session set-up failed: {error}", error=failure.getErrorMessage()
        )
        self._end_session(session)
        if self._starting is not None:
            self._fail_start(failure)
        else:
            self._failed_sessions += 1

    # packets and losses

    def _packet_received(self, session: _Session, packet: DataPacket) -> None:
        if session.ended:
            return
        now = cast(Clock, self._clock).seconds()
        if not session.first_packet_seen:
            session.first_packet_seen = True
            if self._awaiting_resume:
                self._awaiting_resume = False
                self._report_resume(session, packet, now)
        self._last_packet_id = packet.packet_id
        self._last_packet_time = session.last_packet = now
        if self.on_packet is not None:
            deliver(self._log, self.on_packet, packet)

    def _report_resume(self, session: _Session, packet: DataPacket, now: float) -> None:
        """Packet ids are tick numbers: the jump across the reconnect is the ticks lost."""
        metainfo = session.metainfo
        assert metainfo is not None
        period = metainfo.master_block_size / metainfo.master_sampling_rate
        last = self._last_packet_id
        if last is not None and packet.packet_id > last:
            ticks = packet.packet_id - last - 1
            self.ticks_lost += ticks
            seconds = ticks * period
        else:
            # The server restarted (ids start over): only wall-clock time can tell.
            seconds = max(0.0, now - self._last_packet_time - period)
        self._log.info("streaming resumed; {seconds:.3f} s of signal lost", seconds=seconds)
        if self.on_reconnect is not None:
            try:
                self.on_reconnect(seconds)
            except Exception:
                self._log.failure("onReconnect callback raised")

    def _watch(self, session: _Session) -> None:
        """The data watchdog: a streaming session silent for ``data_timeout`` s is lost."""
        session.watchdog = None
        if self.data_timeout is None or session.ended or session.metainfo is None:
            return
        metainfo = session.metainfo
        limit = max(self.data_timeout, 3 * metainfo.master_block_size / metainfo.master_sampling_rate)
        due = session.last_packet + limit - self._clock.seconds()
        if due > 0:
            session.watchdog = self._clock.callLater(due, self._watch, session)
            return
        self._log.warn("no data from the TiA server for {seconds:g} s", seconds=limit)
        self._session_lost(session, Failure(TiAConnectionLost(f"no data for {limit:g} s")))

    def _data_lost(self, session: _Session, result: Failure | None) -> None:
        if session.ended:
            return
        if isinstance(result, Failure):
            reason = result
        elif session.tcp_data is not None and session.tcp_data.close_reason is not None:
            reason = session.tcp_data.close_reason
        else:
            reason = connectionDone
        self._session_lost(session, reason)

    def _session_lost(self, session: _Session, reason: Failure) -> None:
        if session.ended:
            return
        self._end_session(session)
        if self._stop_waiters is not None or not session.started:
            return  # stop() is closing it, or the set-up failure path reports it
        self._log.warn("TiA session lost: {reason}", reason=reason.getErrorMessage())
        if self.reconnect:
            self.reconnections += 1
            self._awaiting_resume = self._last_packet_id is not None
        elif self.on_disconnect is not None:
            try:
                self.on_disconnect(reason)
            except Exception:
                self._log.failure("onDisconnect callback raised")

    def _end_session(self, session: _Session) -> None:
        """Close everything of a session; a closed control makes ``ClientService`` reconnect."""
        if session.ended:
            return
        session.ended = True
        if self._session is session:
            self._session = None
        if session.watchdog is not None and session.watchdog.active():
            session.watchdog.cancel()
        session.watchdog = None
        if session.tcp_data is not None:
            session.closing.append(session.tcp_data.close())
        if session.udp_port is not None:
            stopped = session.udp_port.stopListening()
            if stopped is not None:
                session.closing.append(stopped)
        if session.state is not None:
            session.closing.append(session.state.close())
        session.closing.append(session.control.close())

    # stop

    def stop(self) -> Deferred[None]:
        """Send StopDataTransmission, then close data, state and control; fires when closed."""
        waiter: Deferred[None] = Deferred()
        if self._stop_waiters is None:
            self._stop_waiters = [waiter]
            Deferred.fromCoroutine(self._stop())
        elif self._stopped:
            waiter.callback(None)
        else:
            self._stop_waiters.append(waiter)
        return waiter

    async def _stop(self) -> None:
        try:
            await self._shut_down()
        except Exception:
            self._log.failure("error while stopping the TiA stream")
        self._stopped = True
        waiters, self._stop_waiters = self._stop_waiters or [], []
        for waiter in waiters:
            waiter.callback(None)

    async def _shut_down(self) -> None:
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
            self._end_session(session)
            closing.extend(session.closing)
        if service is not None:
            closing.append(service.stopService())
        await defer.DeferredList(closing, consumeErrors=True)
        self._log.info("TiA stream stopped")
