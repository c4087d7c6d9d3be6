"""Shared helpers of the test suite: configs from text, servers on real sockets and their peers,
and the ways a test waits: on a Deferred the event fires, or ``until`` (``wait_for`` off the
reactor) a cheap condition holds; ``sleep`` only where the duration itself is under test."""

from __future__ import annotations

import configparser
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Generator, Iterator, Sequence, Sized
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import pytest
from twisted.internet import reactor, task
from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IListeningPort, IReactorSocket, IReactorUDP, ISystemHandle, ITCPTransport
from twisted.internet.protocol import DatagramProtocol, Protocol, ServerFactory
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import provider

from tia.client.blocking import TiAClient
from tia.client.packet import TiAPacket
from tia.config import ServerConfig, parse_config
from tia.daemon import build_service
from tia.protocol.control import Command, ControlMessage, ControlParser, ControlProtocolError, build_message
from tia.protocol.packet import DataPacket, PacketStreamDecoder, decode_packet
from tia.server.control import ServerControlProtocol
from tia.server.data import TCPDataProtocol, UDPDestination
from tia.server.service import TiAService
from tia.server.tick import Tick
from tia.sources.base import ISource

RAMP_INI = """
[server]
control = tcp:0:interface=127.0.0.1
{server_extra}

[subject]
id = T01

[udp]
mode = {udp_mode}

[source:eeg]
driver = ramp
rate = {rate}
blocksize = {blocksize}
channels = {channels}
type = eeg
"""


def config_from_text(text: str, path: str = "test.ini") -> ServerConfig:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    parser.read_string(textwrap.dedent(text))
    return parse_config(parser, path)


def ramp_config(
    rate: int = 1000,
    blocksize: int = 10,
    channels: int = 4,
    udp_mode: str = "unicast",
    extra: str = "",
    server_extra: str = "",
) -> ServerConfig:
    """A ramp server config; ``server_extra`` lines go into [server], ``extra`` sections at the end."""
    text = RAMP_INI.format(
        rate=rate, blocksize=blocksize, channels=channels, udp_mode=udp_mode, server_extra=server_extra
    )
    return config_from_text(text + textwrap.dedent(extra))


def ramp_values(channels: int, first_sample: int, count: int) -> list[list[float]]:
    """What the ramp driver sends: channel c (1-based), sample k -> c * 1000 + k % 1000."""
    return [
        [float(c * 1000 + (k % 1000)) for k in range(first_sample, first_sample + count)]
        for c in range(1, channels + 1)
    ]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, for a server started in another process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def accepts_connections(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port`` now."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def wait_for_port(
    process: subprocess.Popen[bytes], port: int, log: Path | None = None, seconds: float = 30.0
) -> None:
    """Until ``process`` accepts connections on 127.0.0.1:``port``; fails the test with its output
    (``log``, else its piped stdout) if it ends first or takes longer than ``seconds``."""

    def output() -> str:
        if log is not None:
            return log.read_text(errors="replace")
        return process.stdout.read().decode(errors="replace") if process.stdout else ""

    def listening() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the daemon ended (status {process.returncode}):\n{output()}")
        return accepts_connections(port)

    try:
        wait_for(listening, seconds)
    except AssertionError:
        process.kill()  # its output ends, so it can be read whole
        process.wait()
        pytest.fail(f"the daemon did not listen on port {port} within {seconds:g} s:\n{output()}")


def start_daemon(arguments: list[str], workdir: Path) -> Iterator[str]:
    """Run the daemon (``python -m twisted tia --port N`` + ``arguments``, in ``workdir``, its log in
    ``workdir/daemon.log``) on a free port until the generator is closed; yields 'host:port'."""
    port = free_port()
    log_path = workdir / "daemon.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "twisted", "tia", "--port", str(port), *arguments],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_for_port(process, port, log_path, seconds=20)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


POLL_SECONDS = 0.01
"""How often ``wait_for`` and ``until`` look at their condition."""


def wait_for(condition: Callable[[], bool], seconds: float = 15.0) -> None:
    """Block until ``condition`` holds, polled every 10 ms; fail (AssertionError) after ``seconds``.
    For threads and other processes; a test on the reactor waits with ``until``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {seconds:g} s")
        time.sleep(POLL_SECONDS)


def until(condition: Callable[[], bool], seconds: float = 15.0) -> Deferred[None]:
    """Fires once ``condition`` holds (at once if it does now), polled on the reactor every 10 ms;
    fails with AssertionError after ``seconds``. ``wait_for`` for tests on the reactor: it waits on
    state no event announces (a count on the server's side, a kernel buffer), never for a fixed time."""
    done: Deferred[None] = Deferred()
    deadline = time.monotonic() + seconds

    def poll() -> None:
        try:
            held = condition()
        except Exception:
            done.errback()
            return
        if held:
            done.callback(None)
        elif time.monotonic() > deadline:
            done.errback(AssertionError(f"condition not met within {seconds:g} s"))
        else:
            reactor.callLater(POLL_SECONDS, poll)

    poll()
    return done


def sleep(seconds: float) -> Deferred[None]:
    """Fires after ``seconds`` of reactor time: only where that duration is itself what the test is
    about (nothing may happen meanwhile, a client paced below a rate); to wait for something to
    happen, wait on it (a Deferred, ``until``, ``ticks``)."""
    return task.deferLater(reactor, seconds, lambda: None)


def read_available(
    sock: socket.socket, would_block: tuple[type[Exception], ...] = (BlockingIOError,)
) -> tuple[bytes, bool]:
    """What the non-blocking ``sock`` holds now, and whether its peer has closed it (an EOF or a reset);
    ``would_block``: what its ``recv`` raises when there is nothing (an SSL socket's differs)."""
    chunks: list[bytes] = []
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)
    except would_block:
        return b"".join(chunks), False
    except (ConnectionResetError, ConnectionRefusedError):
        return b"".join(chunks), True


class LogCapture:
    """Collects formatted log lines (with their level name: ``info``, ``warn``...) until ``testcase``
    ends, or, without one, until the ``with`` block it opens ends; ``wait_for`` one of them."""

    def __init__(self, testcase: unittest.TestCase | None = None) -> None:
        self.lines: list[tuple[str, str]] = []
        self._waiting: list[tuple[str, str, Deferred[str]]] = []

        @provider(ILogObserver)
        def observe(event: LogEvent) -> None:
            level = getattr(event.get("log_level"), "name", "?")
            line = formatEvent(event) or ""
            self.lines.append((level, line))
            for waiting in [w for w in self._waiting if w[0] == level and w[1] in line]:
                self._waiting.remove(waiting)
                reactor.callLater(0, waiting[2].callback, line)  # not inside whoever is logging

        self._observer = observe
        globalLogPublisher.addObserver(observe)
        if testcase is not None:
            testcase.addCleanup(self.stop)

    def stop(self) -> None:
        globalLogPublisher.removeObserver(self._observer)

    def __enter__(self) -> LogCapture:
        return self

    def __exit__(self, *exception: object) -> None:
        self.stop()

    def find(self, level: str, text: str) -> list[str]:
        return [line for lvl, line in self.lines if lvl == level and text in line]

    def count(self, text: str) -> int:
        """How many lines, at any level, contain ``text``."""
        return sum(text in line for _, line in self.lines)

    def wait_for(self, level: str, text: str) -> Deferred[str]:
        """Fires with the first line at ``level`` containing ``text``, at once if one was logged."""
        waiting: Deferred[str] = Deferred()
        found = self.find(level, text)
        if found:
            waiting.callback(found[0])
        else:
            self._waiting.append((level, text, waiting))
        return waiting


class _TickCounter:
    """A hub subscriber that fires once ``count`` ticks went out after it subscribed."""

    def __init__(self, service: TiAService, count: int) -> None:
        self.service, self.left = service, count
        self.done: Deferred[None] = Deferred()

    def deliver(self, ticks: Sequence[Tick]) -> None:
        self.left -= len(ticks)
        if self.left <= 0:
            self.service.hub.unsubscribe(self)
            reactor.callLater(0, self.done.callback, None)  # not inside the hub's fan-out


def ticks(service: TiAService, count: int) -> Deferred[None]:
    """Fires once the hub sent ``count`` more ticks to its subscribers (every one of them had them)."""
    counter = _TickCounter(service, count)
    service.hub.subscribe(counter)
    return counter.done


class FakeUDPPort:
    """What ``MemoryReactorWithUDP.listenUDP`` gives: the datagrams its protocol writes."""

    def __init__(self, protocol: DatagramProtocol) -> None:
        self.protocol = protocol
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, datagram: bytes, address: tuple[str, int]) -> None:
        self.sent.append((datagram, address))

    def setBroadcastAllowed(self, enabled: bool) -> None:
        pass

    def stopListening(self) -> None:
        self.protocol.doStop()


class MemoryReactorWithUDP(MemoryReactorClock):
    """``MemoryReactorClock``, which has no UDP, plus a UDP port that keeps what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.udp_ports: list[FakeUDPPort] = []

    def listenUDP(
        self, port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> FakeUDPPort:
        fake = FakeUDPPort(protocol)
        self.udp_ports.append(fake)
        protocol.makeConnection(fake)  # type: ignore[arg-type]  # a fake port: the write the server uses
        return fake


class Wire:
    """One control connection on StringTransport to a server on ``config`` (a MemoryReactorClock)."""

    def __init__(self, config: ServerConfig, peer: str = "127.0.0.1") -> None:
        self.reactor = MemoryReactorWithUDP()
        self.service = TiAService(config, self.reactor)  # built, never started: its channels only
        self.hub = self.service.hub
        self.factory = self.service.factory
        self.service_metainfo_reply = build_message(Command.METAINFO, content=self.hub.metainfo.to_xml())
        protocol = self.factory.buildProtocol(IPv4Address("TCP", peer, 5000))
        assert isinstance(protocol, ServerControlProtocol)
        self.protocol = protocol
        self.transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 9000), peerAddress=IPv4Address("TCP", peer, 5000)
        )
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> bytes:
        """Feed ``data`` to the server; returns what it wrote back."""
        self.transport.clear()
        self.protocol.dataReceived(data)
        written: bytes = self.transport.value()
        return written


MARKERS = """
[source:markers]
driver = events
channels = trigger:event
interval = 0.1
codes = 5, 6
"""
"""An event source sending codes 5 and 6 every 0.1 s, for configs' ``extra``."""


# -- a server on real sockets (127.0.0.1) and minimal peers -----------------------

CHANNELS, BLOCK = 4, 10
"""The ramp of the socket tests: 4 channels in blocks of 10 at 1 kHz, 100 packets/s."""

P = TypeVar("P", bound=Protocol)


class Peer(Protocol):
    """A test peer: ``lost`` fires when its connection closes; ``wait_until`` waits on what it received."""

    def __init__(self) -> None:
        self.lost: Deferred[None] = Deferred()
        self._waiting: list[tuple[Callable[[], bool], Deferred[None]]] = []

    def wait_until(self, condition: Callable[[], bool]) -> Deferred[None]:
        """Fires once ``condition`` holds: now, or after some data arrived; fails (AssertionError)
        when the connection closes before it does."""
        waiting: Deferred[None] = Deferred()
        if condition():
            waiting.callback(None)
        elif self.lost.called:
            waiting.errback(AssertionError("the connection closed before the condition held"))
        else:
            self._waiting.append((condition, waiting))
        return waiting

    def arrived(self) -> None:
        """Subclasses call this after each arrival: fires the waits whose condition now holds."""
        for waiting in [w for w in self._waiting if w[0]()]:
            self._waiting.remove(waiting)
            waiting[1].callback(None)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost.callback(None)
        waiting, self._waiting = self._waiting, []
        for condition, deferred in waiting:
            if condition():
                deferred.callback(None)
            else:
                deferred.errback(AssertionError("the connection closed before the condition held"))


class ControlClient(Peer):
    """A minimal test peer: one request at a time, replies parsed by the core."""

    def __init__(self) -> None:
        super().__init__()
        self.parser = ControlParser()
        self.waiting: list[Deferred[ControlMessage]] = []

    def request(self, command: str, content: bytes | None = None) -> Deferred[ControlMessage]:
        """Send ``command``, with ``content`` as its Content-Length body if given; fires with the reply."""
        assert self.transport is not None
        d: Deferred[ControlMessage] = Deferred()
        self.waiting.append(d)
        if content is None:
            self.transport.write(f"TiA 1.0\n{command}\n\n".encode())
        else:
            self.transport.write(b"TiA 1.0\n%s\nContent-Length:%d\n\n%s" % (command.encode(), len(content), content))
        return d

    def dataReceived(self, data: bytes) -> None:
        for message in self.parser.feed(data):
            self.waiting.pop(0).callback(message)


class PacketCollector(Peer):
    """A TCP data connection's peer: the packets it received, decoded."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder = PacketStreamDecoder()
        self.packets: list[DataPacket] = []

    def dataReceived(self, data: bytes) -> None:
        self.packets.extend(self.decoder.feed(data))
        self.arrived()

    def wait_for(self, count: int) -> Deferred[None]:
        """Fires once ``count`` packets are in."""
        return self.wait_until(lambda: len(self.packets) >= count)


class RawClient(Peer):
    """A peer that sends whatever it is told and records every byte it gets back (and, while they
    parse, the control messages among them)."""

    def __init__(self) -> None:
        super().__init__()
        self.received = bytearray()
        self.messages: list[ControlMessage] = []
        self._parser: ControlParser | None = ControlParser()
        self.connected_at = 0.0
        self.lost_at: float | None = None

    def connectionMade(self) -> None:
        self.connected_at = time.monotonic()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self._parser is not None:
            try:
                self.messages.extend(self._parser.feed(data))
            except ControlProtocolError:
                self._parser = None  # not the control protocol (an HTTP reply): bytes only
        self.arrived()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost_at = time.monotonic()
        super().connectionLost(reason)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def replies(self) -> list[str]:
        """The command lines of the control messages received so far."""
        lines = []
        for message in self.messages:
            separator = " -- " if message.command == "Error" else ":"
            lines.append(message.command + (separator + message.parameter if message.parameter else ""))
        return lines

    def wait_for_replies(self, count: int) -> Deferred[None]:
        """Fires once ``count`` control messages are in."""
        return self.wait_until(lambda: len(self.messages) >= count)


class UDPCollector(DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[DataPacket] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.packets.append(decode_packet(datagram))


def check_stream(testcase: unittest.TestCase, packets: list[DataPacket]) -> None:
    """Gap-free, numbered from 0, and every sample exactly what the ramp source sent."""
    testcase.assertTrue(packets)
    testcase.assertEqual([p.connection_number for p in packets], list(range(len(packets))))
    first = packets[0].packet_id
    testcase.assertEqual([p.packet_id for p in packets], list(range(first, first + len(packets))))
    for packet in packets:
        expected = ramp_values(CHANNELS, packet.packet_id * BLOCK, BLOCK)
        np.testing.assert_array_equal(packet.signals[1], expected)
        testcase.assertEqual(packet.timestamp, packet.packet_id * 10_000)


def port_of(message: ControlMessage) -> int:
    assert message.parameter is not None
    return int(message.parameter)


def tcp_connect(port: int, protocol: P) -> Deferred[P]:
    """Connect ``protocol`` to 127.0.0.1:``port``; fires with it once connected."""
    connected: Deferred[P] = connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol).addCallback(
        lambda _: protocol
    )
    return connected


def all_arrived(received: Sized, sender: TCPDataProtocol | UDPDestination) -> Deferred[None]:
    """Fires once ``received`` holds every packet ``sender`` (the server's data connection or UDP
    destination of a client that loses nothing) has sent: nothing is in flight any more."""
    return until(lambda: len(received) >= sender.packets)


def server_factory(build: Callable[[], Protocol]) -> ServerFactory:
    """A factory serving each connection with ``build()``."""
    factory: ServerFactory = ServerFactory()
    factory.protocol = build
    return factory


def port_number(listening: IListeningPort) -> int:
    """The TCP port number ``listening`` is bound to."""
    address = listening.getHost()
    assert isinstance(address, IPv4Address | IPv6Address)
    return address.port


def unsent_bytes(transport: object) -> int:
    """What Twisted holds for the TCP ``transport``: written by its protocol, not yet taken by the kernel."""
    connection = cast(FileDescriptor, transport)
    return len(connection.dataBuffer) - connection.offset + connection._tempDataLen


def socket_of(protocol: Protocol) -> socket.socket:
    """The socket beneath ``protocol``'s TCP connection (beneath TLS too)."""
    transport: object = protocol.transport
    while transport is not None:
        if ISystemHandle.providedBy(transport):
            handle = ISystemHandle(transport).getHandle()
            if isinstance(handle, socket.socket):
                return handle
        transport = getattr(transport, "transport", None)  # TLS: the TCP transport beneath
    raise AssertionError(f"{protocol!r} is not on a TCP connection")


def local_port(peer: Protocol | socket.socket) -> int:
    """The local port of a connected test peer (a protocol, or a plain socket)."""
    if isinstance(peer, socket.socket):
        port: int = peer.getsockname()[1]
        return port
    assert peer.transport is not None
    host = peer.transport.getHost()
    assert isinstance(host, IPv4Address)
    return host.port


class SocketTestCase(unittest.TestCase):
    """A test against a TiAService on 127.0.0.1, started by ``serve``, and peers connected to it."""

    service: TiAService
    port: int

    def serve(self, config: ServerConfig, sources: Sequence[ISource] | None = None) -> None:
        """Start a server on ``config`` until the test ends; ``self.port`` is its control port."""
        self.service = build_service(config, sources=sources)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.port = self.service.control_port

    def connect(self, port: int, protocol: P, abort: bool = False) -> Deferred[P]:
        """:func:`tcp_connect`, closed (with ``abort``: reset) when the test ends."""

        def connected(protocol: P) -> P:
            self.close_at_end(protocol, abort)
            return protocol

        return tcp_connect(port, protocol).addCallback(connected)

    def close_at_end(self, protocol: Protocol, abort: bool = False) -> None:
        """Close ``protocol``'s connection (with ``abort``: reset) when the test ends, if still open."""

        def close() -> None:
            transport = protocol.transport
            if transport is None:
                return
            if abort:
                cast(ITCPTransport, transport).abortConnection()
            else:
                transport.loseConnection()

        self.addCleanup(close)

    def adopt(self, sock: socket.socket, protocol: P) -> P:
        """Hand the connected ``sock`` over to the reactor, ``protocol`` reading it from now on
        (a peer that did not read so far reads as fast as it can); closed when the test ends."""
        IReactorSocket(reactor).adoptStreamConnection(sock.fileno(), sock.family, server_factory(lambda: protocol))
        sock.close()  # the reactor holds its own duplicate
        self.close_at_end(protocol, abort=True)
        return protocol

    def session(self, peer: Protocol | socket.socket) -> Deferred[ServerControlProtocol]:
        """Fires with the server's side of ``peer``'s control connection once the server accepted it."""
        port = local_port(peer)
        found: list[ServerControlProtocol] = []

        def accepted() -> bool:
            found.extend(s for s in self.service.factory.sessions if s.peer.endswith(f":{port}"))
            return bool(found)

        return until(accepted).addCallback(lambda _: found[0])

    def udp_receiver(self, port: int, interface: str = "127.0.0.1") -> UDPCollector:
        """The datagrams sent to ``port`` on ``interface`` ("": every interface), until the test ends."""
        receiver = UDPCollector()
        listening = IReactorUDP(reactor).listenUDP(port, receiver, interface=interface, maxPacketSize=65535)
        self.addCleanup(listening.stopListening)
        return receiver

    def unread_socket(self, port: int) -> socket.socket:
        """A plain socket with a 4 kB receive buffer connected to 127.0.0.1:``port``, non-blocking
        and never read unless the test does."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.addCleanup(sock.close)
        sock.connect(("127.0.0.1", port))  # loopback: returns once the server's kernel accepted it
        sock.setblocking(False)
        return sock

    def control(self) -> Deferred[ControlClient]:
        """A control connection to the server."""
        return self.connect(self.port, ControlClient())

    def data(self, port: int) -> Deferred[PacketCollector]:
        """A TCP data connection to ``port``, as GetDataConnection:TCP announced it."""
        return self.connect(port, PacketCollector())

    @inlineCallbacks
    def dropping_side(self, slow: socket.socket) -> Generator[Deferred[Any], Any, TCPDataProtocol]:
        """The server's data connection to ``slow`` (a client that does not read), once it has
        had to drop more than 50 packets for it."""
        port = local_port(slow)
        found: list[TCPDataProtocol] = []

        def dropping() -> bool:
            found[:] = [s.tcp_data for s in self.service.factory.sessions
                        if s.tcp_data is not None and s.tcp_data.peer.endswith(f":{port}")]
            return bool(found) and found[0].dropped > 50

        yield until(dropping)
        return found[0]

    @inlineCallbacks
    def assert_exact_while_another_drops(
        self, healthy: PacketCollector, slow: socket.socket, channels: int, block: int,
        would_block: tuple[type[Exception], ...] = (BlockingIOError,),
    ) -> Generator[Deferred[Any], Any, None]:
        """``healthy`` lost nothing and its values are exact, while ``slow``'s loss shows as a gap
        in its own connection packet numbers once it reads again."""
        yield healthy.wait_for(len(healthy.packets) + 20)
        numbers = [p.connection_number for p in healthy.packets]
        self.assertEqual(numbers, list(range(len(numbers))))
        for packet in healthy.packets[-5:]:
            np.testing.assert_array_equal(packet.signals[1], ramp_values(channels, packet.packet_id * block, block))
        slow.setblocking(False)
        decoder = PacketStreamDecoder()
        slow_numbers: list[int] = []

        def gap_seen() -> bool:  # drain what the kernel and the server held, until the gap shows
            data, _ = read_available(slow, would_block)
            slow_numbers.extend(p.connection_number for p in decoder.feed(data))
            return any(b - a > 1 for a, b in pairwise(slow_numbers))

        yield until(gap_seen)
        self.assertEqual(slow_numbers[0], 0)
        self.assertTrue(any(b - a > 1 for a, b in pairwise(slow_numbers)))
        self.assertEqual(sorted(set(slow_numbers)), slow_numbers)

    @inlineCallbacks
    def streaming(self, packets: int = 5) -> Generator[Deferred[Any], Any, tuple[ControlClient, PacketCollector]]:
        """A client streaming over TCP once ``packets`` packets are in; returns (control, collector)."""
        control = yield self.control()
        port = port_of((yield control.request("GetDataConnection:TCP")))
        collector = yield self.data(port)
        yield control.request("StartDataTransmission")
        yield collector.wait_for(packets)
        return control, collector


def stream_blocking(
    port: int, udp: bool, count: int = 30, check: Callable[[TiAClient], object] | None = None, **options: Any
) -> list[TiAPacket]:
    """``count`` packets from the server on 127.0.0.1:``port`` through the blocking client (TCP or
    UDP, ``options`` for ``TiAClient``), stopped cleanly; ``check`` looks at the client first.
    Blocking: run it in a thread from a trial test."""
    with TiAClient("127.0.0.1", port, timeout=10, **options) as client:
        if check is not None:
            check(client)
        if udp:
            ok, data_port = client.cmd_get_data_connection_udp()
            assert ok and client.start_streaming_data_udp("127.0.0.1", data_port)
        else:
            ok, data_port = client.cmd_get_data_connection_tcp()
            assert ok and client.start_streaming_data_tcp("127.0.0.1", data_port)
        packets: list[TiAPacket] = []
        while len(packets) < count:
            packets.extend(client.get_data())
        assert client.stop_streaming_data()
    return packets
