"""Shared helpers of the test suite: configs from text, servers on real sockets and their peers."""

from __future__ import annotations

import configparser
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from twisted.internet import reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from tia.config import ServerConfig, parse_config
from tia.daemon import build_service
from tia.protocol.control import Command, ControlMessage, ControlParser, build_message
from tia.protocol.packet import DataPacket, PacketStreamDecoder, decode_packet
from tia.server.control import ServerControlProtocol
from tia.server.service import TiAService
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


def wait_for_port(process: subprocess.Popen[bytes], port: int) -> None:
    """Until ``process`` (stdout piped) accepts connections on ``port``; fails the test with its output if it ends
    first or takes longer than 30 s."""
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"twistd did not start:\n{output}")
            time.sleep(0.1)


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
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"daemon exited: {log_path.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"daemon not listening: {log_path.read_text(errors='replace')}"
                    ) from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def wait_for(condition: Callable[[], bool], seconds: float = 15.0) -> None:
    """Poll ``condition`` every 20 ms (blocking) until it holds; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


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
        protocol.makeConnection(fake)  # type: ignore[arg-type]
        return fake


class Wire:
    """One control connection on StringTransport to a server on ``config`` (a MemoryReactorClock)."""

    def __init__(self, config: ServerConfig, peer: str = "127.0.0.1") -> None:
        self.reactor = MemoryReactorWithUDP()
        self.service = TiAService(config, self.reactor)  # built, never started: its channels only
        self.hub = self.service.hub
        self.factory = self.service.factory
        self.service_metainfo_reply = build_message(Command.METAINFO, content=self.hub.metainfo.to_xml())
        self.protocol: ServerControlProtocol = self.factory.buildProtocol(IPv4Address("TCP", peer, 5000))
        self.transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 9000), peerAddress=IPv4Address("TCP", peer, 5000)
        )
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> bytes:
        """Feed ``data`` to the server; returns what it wrote back."""
        self.transport.clear()
        self.protocol.dataReceived(data)
        return self.transport.value()


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


def sleep(seconds: float) -> Deferred[None]:
    """Fires after ``seconds`` of reactor time."""
    return task.deferLater(reactor, seconds, lambda: None)


class ControlClient(Protocol):
    """A minimal test peer: one request at a time, replies parsed by the core."""

    def __init__(self) -> None:
        self.parser = ControlParser()
        self.waiting: list[Deferred[ControlMessage]] = []
        self.lost: Deferred[None] = Deferred()

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

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class PacketCollector(Protocol):
    def __init__(self) -> None:
        self.decoder = PacketStreamDecoder()
        self.packets: list[DataPacket] = []
        self.lost: Deferred[None] = Deferred()
        self._want: tuple[int, Deferred[None]] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.packets.extend(self.decoder.feed(data))
        if self._want and len(self.packets) >= self._want[0]:
            d = self._want[1]
            self._want = None
            d.callback(None)

    def wait_for(self, count: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if len(self.packets) >= count:
            d.callback(None)
        else:
            self._want = (count, d)
        return d

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


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
    connecting = connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)
    return connecting.addCallback(lambda _: protocol)


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

        def close() -> None:
            transport: Any = protocol.transport
            if transport is None:
                return
            if abort:
                transport.abortConnection()
            else:
                transport.loseConnection()

        def connected(protocol: P) -> P:
            self.addCleanup(close)
            return protocol

        return tcp_connect(port, protocol).addCallback(connected)

    def udp_receiver(self, port: int, interface: str = "127.0.0.1") -> UDPCollector:
        """The datagrams sent to ``port`` on ``interface`` ("": every interface), until the test ends."""
        receiver = UDPCollector()
        listening = reactor.listenUDP(port, receiver, interface=interface, maxPacketSize=65535)
        self.addCleanup(listening.stopListening)
        return receiver

    def unread_socket(self, port: int) -> socket.socket:
        """A non-blocking plain socket with a 4 kB receive buffer connecting to 127.0.0.1:``port``."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        self.addCleanup(sock.close)
        try:
            sock.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        return sock

    def control(self) -> Deferred[ControlClient]:
        """A control connection to the server."""
        return self.connect(self.port, ControlClient())

    def data(self, port: int) -> Deferred[PacketCollector]:
        """A TCP data connection to ``port``, as GetDataConnection:TCP announced it."""
        return self.connect(port, PacketCollector())

    @inlineCallbacks
    def dropping_side(self, slow: socket.socket) -> Generator[Deferred[Any], Any, Any]:
        """The server's data connection to ``slow`` (a client that does not read), once it has
        had to drop more than 50 packets for it."""
        server_side = None
        for _ in range(100):
            yield sleep(0.05)
            server_side = next(c.tcp_data for c in self.service.factory.sessions if c.tcp_data and
                               c.tcp_data.transport.getPeer().port == slow.getsockname()[1])
            if server_side.dropped > 50:
                break
        assert server_side is not None
        self.assertGreater(server_side.dropped, 50)
        return server_side

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
        for _ in range(250):  # drain what the kernel and the server held, until the gap shows
            yield sleep(0.02)
            try:
                while True:
                    chunk = slow.recv(1 << 20)
                    if not chunk:
                        break
                    slow_numbers.extend(p.connection_number for p in decoder.feed(chunk))
            except would_block:
                pass
            if any(b - a > 1 for a, b in pairwise(slow_numbers)):
                break
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
