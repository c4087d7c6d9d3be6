"""Hostile, broken and vanishing peers and faulty sources, on real sockets.

Every test runs a healthy streaming client next to the misbehaving one and
checks at the end that its stream stayed exact and gap-free (connection
numbers, packet ids, sample values): whatever one client or source does,
the others lose nothing. Each hostile behaviour has one defined outcome,
asserted byte for byte where there is a reply, and is logged a bounded
number of times.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Generator, Iterable
from dataclasses import replace
from fractions import Fraction
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from support import (
    BLOCK,
    CHANNELS,
    LogCapture,
    PacketCollector,
    RawClient,
    SocketTestCase,
    check_stream,
    config_from_text,
    port_of,
    ramp_config,
    ramp_values,
    sleep,
    socket_of,
    unsent_bytes,
    until,
)
from twisted.internet import reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, LogLevel, formatEvent
from zope.interface import implementer

from tia.config import ConfigError, ServerConfig
from tia.protocol.control import ControlMessage
from tia.protocol.packet import PacketStreamDecoder, SampleArray
from tia.protocol.signals import by_name
from tia.server.clock import MasterClock
from tia.server.control import ServerControlProtocol
from tia.server.data import TCPDataListener, TCPDataProtocol, UDPSender
from tia.server.guard import (
    ConnectionGuard,
    RateLimitedLog,
    RequestBudget,
    endpoint_interface,
    exposure_warning,
    host_allowed,
)
from tia.server.state import ServerStateChannel
from tia.server.tick import Tick
from tia.sources import build_source
from tia.sources.base import ChannelSpec, ISource, SourceSpec


class HostileCase(SocketTestCase):
    """A ramp server (4 ch, 1 kHz, blocks of 10: 100 packets/s) plus a healthy streaming client."""

    timeout = 30
    server_extra = ""

    def setUp(self) -> None:
        self.log = LogCapture(self)
        self.serve(self.config(), self.sources())

    def config(self) -> ServerConfig:
        return ramp_config(rate=1000, blocksize=BLOCK, channels=CHANNELS, server_extra=self.server_extra)

    def sources(self) -> list[Any] | None:
        return None

    def logged(self, text: str) -> int:
        return self.log.count(text)

    def raw(self) -> Deferred[RawClient]:
        return self.connect(self.port, RawClient(), abort=True)

    @inlineCallbacks
    def still_healthy(self, collector: PacketCollector, more: int = 20) -> Generator[Deferred[Any], Any, None]:
        """The healthy client keeps streaming, exact and gap-free, after the hostile act."""
        yield collector.wait_for(len(collector.packets) + more)
        check_stream(self, collector.packets)


# ----------------------------------------------------------------- (1) hostile control input


class HostileInputTests(HostileCase):
    @inlineCallbacks
    def expect_error_then_close(self, data: bytes, reason: str) -> Any:
        client = yield self.raw()
        client.send(data)
        yield client.lost
        self.assertEqual(bytes(client.received), f"TiA 1.0\nError -- {reason}\n\n".encode())

    @inlineCallbacks
    def test_endless_line(self) -> Any:
        _, healthy = yield self.streaming()
        yield self.expect_error_then_close(b"A" * 200_000, "control line longer than 1024 bytes")
        yield self.still_healthy(healthy)

    @inlineCallbacks
    def test_huge_negative_and_garbage_content_length(self) -> Any:
        _, healthy = yield self.streaming()
        head = b"TiA 1.0\nSetCustomSignalInfo\n"
        yield self.expect_error_then_close(
            head + b"Content-Length:99999999999999999999\n\n",
            "Content-Length 99999999999999999999 exceeds the limit of 1048576 bytes",
        )
        yield self.expect_error_then_close(head + b"Content-Length:-5\n\n", "invalid Content-Length '-5'")
        yield self.expect_error_then_close(head + b"Content-Length:0x10\n\n", "invalid Content-Length '0x10'")
        yield self.still_healthy(healthy)

    @inlineCallbacks
    def test_truncated_message_then_close(self) -> Any:
        _, healthy = yield self.streaming()
        client = yield self.raw()
        head = b"TiA 1.0\nSetCustomSignalInfo\nContent-Length:500\n\n"
        client.send(head + b"<tiaCustomSignalInfo")
        server = yield self.session(client)
        self.assertEqual(len(self.service.factory.sessions), 2)
        yield until(lambda: server.parser.content_remaining == 500 - len(b"<tiaCustomSignalInfo"))  # all read
        client.transport.loseConnection()
        yield client.lost
        yield server.closed
        self.assertEqual(bytes(client.received), b"")  # nothing to answer: the request never completed
        self.assertEqual(len(self.service.factory.sessions), 1)  # only the healthy one
        yield self.still_healthy(healthy)

    @inlineCallbacks
    def test_binary_garbage(self) -> Any:
        _, healthy = yield self.streaming()
        garbage = bytes(np.random.default_rng(7).integers(0, 256, 100_000, dtype=np.uint8))
        client = yield self.raw()
        client.send(garbage)
        yield client.lost
        self.assertTrue(bytes(client.received).startswith(b"TiA 1.0\nError -- "))
        self.assertEqual(len(client.replies()), 1)
        yield self.still_healthy(healthy)

    @inlineCallbacks
    def test_invalid_utf8(self) -> Any:
        _, healthy = yield self.streaming()
        yield self.expect_error_then_close(b"TiA 1.0\nGetMeta\xff\xfeInfo\n\n", "control line is not valid UTF-8")
        yield self.expect_error_then_close(b"\xc3\x28\n", "control line is not valid UTF-8")
        yield self.still_healthy(healthy)

    @inlineCallbacks
    def test_wrong_version_and_http(self) -> Any:
        _, healthy = yield self.streaming()
        yield self.expect_error_then_close(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "unsupported protocol version line 'GET / HTTP/1.1', expected 'TiA 1.0'",
        )
        yield self.still_healthy(healthy)

    @inlineCallbacks
    def test_xml_bomb_and_deep_nesting_get_validation_errors_and_the_connection_stays_usable(self) -> Any:
        _, healthy = yield self.streaming()
        laughs = (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            + b"".join(
                b'<!ENTITY lol%d "%s">' % (n, (b"&lol%d;" % (n - 1) if n > 1 else b"&lol;") * 10) for n in range(1, 10)
            )
            + b']><tiaCustomSignalInfo version="1.0">&lol9;</tiaCustomSignalInfo>'
        )
        external = (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            b'<tiaCustomSignalInfo version="1.0">&e;</tiaCustomSignalInfo>'
        )
        deep = b'<tiaCustomSignalInfo version="1.0">' + b"<a>" * 50_000 + b"</a>" * 50_000 + b"</tiaCustomSignalInfo>"
        client = yield self.raw()
        for content in (laughs, external, deep):
            client.send(b"TiA 1.0\nSetCustomSignalInfo\nContent-Length:%d\n\n" % len(content) + content)
        client.send(b"TiA 1.0\nCheckProtocolVersion\n\n")
        yield client.wait_for_replies(4)
        self.assertEqual(client.replies(), ["ValidationError"] * 3 + ["OK"])
        messages = client.messages
        self.assertIn(b"forbidden XML construct", messages[0].content)
        self.assertIn(b"forbidden XML construct", messages[1].content)
        self.assertIn(b"nested deeper than", messages[2].content)
        self.assertIsNone(client.lost_at)
        yield self.still_healthy(healthy)

    @inlineCallbacks
    def test_unknown_commands_are_answered_and_logged_once(self) -> Any:
        _, healthy = yield self.streaming()
        client = yield self.raw()
        client.send(b"TiA 1.0\nFooBar\n\n" * 50)
        yield client.wait_for_replies(50)
        self.assertEqual(client.replies(), ["Error"] * 50)  # the reference's bytes; usable
        self.assertEqual(self.logged("unknown command 'FooBar'"), 1)
        yield self.still_healthy(healthy)

    @inlineCallbacks
    def test_a_newline_flood_costs_no_reactor_time(self) -> Any:
        _, healthy = yield self.streaming()
        client = yield self.raw()
        for _ in range(40):  # 10 MB of empty lines, skipped between messages
            client.send(b"\n" * 250_000)
        client.send(b"TiA 1.0\nCheckProtocolVersion\n\n")
        yield client.wait_for_replies(1)
        self.assertEqual(client.replies(), ["OK"])
        self.assertLess(self.service.clock.longest_catch_up, 20)  # never blocked the reactor for long
        yield self.still_healthy(healthy)


class LateReaderTests(HostileCase):
    """256 channels: 12 kB metainfo replies, more than the kernel buffers hold."""

    def config(self) -> ServerConfig:
        return ramp_config(rate=1000, blocksize=10, channels=256)

    @inlineCallbacks
    def test_the_error_reaches_a_flooding_peer_that_reads_late(self) -> Any:
        """Closing with the peer's requests unread must not reset away the replies and the Error."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.connect(("127.0.0.1", self.port))  # loopback: returns at once
        sock.setblocking(False)
        self.addCleanup(sock.close)
        sock.send(b"TiA 1.0\nGetMetaInfo\n\n" * 5000)  # 5000 requests; 200 replies are 2.5 MB
        # reads nothing meanwhile: the server closes with its replies still queued
        yield self.log.wait_for("warn", "too many requests")
        reader = self.adopt(sock, RawClient())  # reads at last, as fast as it can
        yield reader.lost
        replies = reader.messages
        self.assertEqual(replies[-1], ControlMessage("Error", "too many requests (limit 200 per second)"))
        self.assertTrue(200 <= len(replies) - 1 <= 220)
        self.assertEqual({m.command for m in replies[:-1]}, {"MetaInfo"})


class RequestFloodTests(HostileCase):
    """Default request_rate = 200: bursts of up to 200 answered, then Error and close."""

    @inlineCallbacks
    def test_five_thousand_requests_as_fast_as_possible(self) -> Any:
        _, healthy = yield self.streaming()
        client = yield self.raw()
        client.send(b"TiA 1.0\nCheckProtocolVersion\n\n" * 5000)
        yield client.lost
        replies = client.replies()
        self.assertEqual(replies[-1], "Error -- too many requests (limit 200 per second)")
        self.assertTrue(200 <= len(replies) - 1 <= 220, len(replies))
        self.assertEqual(set(replies[:-1]), {"OK"})
        self.assertEqual(self.logged("too many requests"), 1)
        yield self.still_healthy(healthy)

    @inlineCallbacks
    def test_a_client_within_the_rate_is_never_limited(self) -> Any:
        _, healthy = yield self.streaming()
        control = yield self.control()
        for _ in range(30):  # 30 round trips at 100 per second
            self.assertEqual((yield control.request("CheckProtocolVersion")).command, "OK")
            yield sleep(0.01)  # the pace under test: within the rate
        yield self.still_healthy(healthy)


class UnreadRepliesTests(HostileCase):
    """A client that floods requests and never reads the replies: it is not read either."""

    server_extra = "request_rate = 0"

    @inlineCallbacks
    def test_replies_never_pile_up(self) -> Any:
        _, healthy = yield self.streaming()
        sock = self.unread_socket(self.port)
        server: ServerControlProtocol = yield self.session(sock)
        requests = b"TiA 1.0\nGetMetaInfo\n\n" * 20_000  # 420 kB of requests for 20 000 metainfo replies
        sent = peak = pending = 0

        def send_more() -> None:
            nonlocal sent
            try:
                while sent < len(requests):
                    sent += sock.send(requests[sent:sent + 65536])
            except BlockingIOError:
                pass

        def stopped_reading() -> bool:
            nonlocal peak, pending
            send_more()
            peak = max(peak, unsent_bytes(server.transport))
            pending = max(pending, server.unhandled_bytes)
            return server.paused

        yield until(stopped_reading)
        self.assertTrue(server.paused)  # it stopped reading us: the kernel pushes back on the sender
        reply_size = len(server.metainfo_reply)
        self.assertLess(peak, 65536 + 2 * reply_size)  # Twisted's buffer size plus one reply
        self.assertLessEqual(pending, 65536 + 1024)  # received, unanswered: one read at most
        yield self.still_healthy(healthy)

        # once the client reads, every request is answered, none lost
        reader = self.adopt(sock, RawClient())
        reader.send(requests[sent:])
        yield reader.wait_for_replies(20_000)
        self.assertEqual(reader.replies(), ["MetaInfo"] * 20_000)


class IdleTimeoutTests(HostileCase):
    server_extra = "idle_timeout = 0.3"

    @inlineCallbacks
    def test_silent_connections_are_closed_streaming_ones_are_not(self) -> Any:
        _, healthy = yield self.streaming()  # never sends a request after Start
        silent = yield self.raw()
        asked_port = yield self.raw()  # asks for a data port but never connects
        asked_port.send(b"TiA 1.0\nGetDataConnection:TCP\n\n")
        chatty = yield self.control()
        state_listener = yield self.control()  # only listens on the state channel
        yield state_listener.request("GetServerStateConnection")
        for _ in range(8):  # 0.8 s: one request every 0.1 s keeps it open
            yield chatty.request("CheckProtocolVersion")
            yield sleep(0.1)  # the pace under test: well within the idle timeout
        yield silent.lost
        yield asked_port.lost
        self.assertEqual(bytes(silent.received), b"TiA 1.0\nError -- no request for 0.3 s; closing\n\n")
        self.assertEqual(asked_port.replies()[1:], ["Error -- no request for 0.3 s; closing"])
        self.assertGreaterEqual(silent.lost_at - silent.connected_at, 0.28)
        self.assertLess(silent.lost_at - silent.connected_at, 1.0)
        self.assertFalse(chatty.lost.called)
        self.assertFalse(state_listener.lost.called)
        self.assertEqual(len(self.service.factory.sessions), 3)  # healthy, chatty, state listener
        yield self.still_healthy(healthy)  # silent for 0.8 s while streaming: not closed


class ConnectionFloodTests(HostileCase):
    server_extra = "max_connections = 5"

    @inlineCallbacks
    def test_beyond_the_limit_refused_politely(self) -> Any:
        _, healthy = yield self.streaming()
        clients = []
        for _ in range(30):
            clients.append((yield self.raw()))
        guard, sessions = self.service.factory.guard, self.service.factory.sessions
        # every connection accepted or refused by the server, and every refused one closed
        yield until(lambda: len(sessions) - 1 + guard.refused == 30
                    and sum(c.lost.called for c in clients) == guard.refused)
        refused = [c for c in clients if c.lost.called]
        accepted = [c for c in clients if not c.lost.called]
        self.assertEqual(len(accepted), 4)  # with the healthy one: 5
        self.assertEqual(len(refused), 26)
        for client in refused:
            self.assertEqual(bytes(client.received), b"TiA 1.0\nError -- too many connections (limit 5)\n\n")
        self.assertEqual(self.logged("refused a control connection"), 1)  # rate-limited
        self.assertEqual(guard.refused, 26)
        leaving = yield self.session(accepted[0])
        accepted[0].transport.loseConnection()
        yield leaving.closed
        newcomer = yield self.control()  # a slot is free again
        self.assertEqual((yield newcomer.request("CheckProtocolVersion")).command, "OK")
        yield self.still_healthy(healthy)


class AllowListRefusalTests(HostileCase):
    server_extra = "allow = 10.0.0.0/8, 192.0.2.7"

    @inlineCallbacks
    def test_outside_the_allowed_networks_closed_without_a_word(self) -> Any:
        clients = []
        for _ in range(5):
            clients.append((yield self.raw()))
        for client in clients:
            yield client.lost
            self.assertEqual(bytes(client.received), b"")
        self.assertEqual(self.logged("refused a control connection from 127.0.0.1: not in the allowed networks"), 1)
        self.assertEqual(self.service.factory.sessions, set())


class AllowListAcceptTests(HostileCase):
    server_extra = "allow = 127.0.0.0/8, ::1"

    @inlineCallbacks
    def test_inside_the_allowed_networks_served(self) -> Any:
        control, healthy = yield self.streaming()
        port = port_of((yield control.request("GetServerStateConnection")))
        state = yield self.connect(port, RawClient())
        yield state.wait_for_replies(1)
        self.assertEqual(bytes(state.received), b"TiA 1.0\nServerStateRunning\n\n")
        yield self.still_healthy(healthy)


def test_state_and_data_ports_refuse_strangers() -> None:
    config = ramp_config(server_extra="allow = 127.0.0.0/8")
    guard = ConnectionGuard(config.allow, 2)
    state = ServerStateChannel(reactor, guard)
    assert state.buildProtocol(IPv4Address("TCP", "192.0.2.1", 4000)) is None
    assert state.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000)) is not None
    listener = TCPDataListener("127.0.0.1", 1 << 16, lambda p: None, lambda p: None)
    assert listener.buildProtocol(IPv4Address("TCP", "127.0.0.2", 4000)) is None  # not the control's peer
    assert listener.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4001)) is not None
    assert listener.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4002)) is None  # only once


def test_a_closing_data_connection_flushes_then_resets_a_client_that_never_reads() -> None:
    lost: list[TCPDataProtocol] = []
    for drains in (True, False):
        clock = Clock()
        protocol = TCPDataProtocol(1 << 16, lost.append)
        transport = StringTransport()
        protocol.makeConnection(transport)
        assert transport.producer is protocol
        protocol.deliver([Tick.from_blocks(0, 0, [(1, np.zeros((1, 1), np.float32))])])
        protocol.close(clock, grace=10)
        assert transport.disconnecting and transport.producer is None  # the buffer goes out first
        if drains:
            protocol.connectionLost(None)  # the client read everything: closed in time
        clock.advance(10)
        assert transport.disconnected is not drains  # reset only when it never drained
        assert clock.getDelayedCalls() == []
    assert len(lost) == 1


# ----------------------------------------------------------------- (2) half-open connections


class KeepaliveTests(HostileCase):
    @inlineCallbacks
    def test_keepalive_on_control_data_and_state_connections(self) -> Any:
        control, healthy = yield self.streaming()
        state_port = port_of((yield control.request("GetServerStateConnection")))
        yield self.connect(state_port, RawClient())
        yield until(lambda: bool(self.service.state.clients))  # the server accepted it
        server_control = yield self.session(control)
        sockets = {
            "control": socket_of(server_control),
            "data": socket_of(server_control.tcp_data),
            "state": socket_of(next(iter(self.service.state.clients))),
        }
        for name, sock in sockets.items():
            self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1, name)
            if hasattr(socket, "TCP_KEEPIDLE"):
                # [server] peer_timeout = 20 (the default): probes from 10 s, every 2 s, 4 of them
                self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), 10, name)
                self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL), 2, name)
                self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT), 4, name)
            if hasattr(socket, "TCP_USER_TIMEOUT"):
                self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT), 18_000, name)
        yield self.still_healthy(healthy)


# ----------------------------------------------------------------- (3) faulty sources, stalls


@implementer(ISource)
class FaultySource:
    """A bp source that raises, hangs or miscounts at chosen ticks (ticks from its first read)."""

    def __init__(self, fault: str, at: int, on_error: str = "stop-signal") -> None:
        self.spec = SourceSpec(
            "bp", "callback", Fraction(1000), BLOCK, (ChannelSpec("bp1", by_name("bp")),), {}, on_error
        )
        self.device_clocked = False
        self.fault, self.at = fault, at
        self.first: int | None = None
        self.hung = False

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def read(self, tick: int) -> SampleArray:
        if self.first is None:
            self.first = tick
        if tick - self.first >= self.at:
            if self.fault == "raise":
                raise OSError(errno.ENODEV, "the amplifier was unplugged")
            if self.fault == "count":
                return np.zeros(BLOCK + 1, dtype=np.float32)
            if self.fault == "hang" and not self.hung:
                self.hung = True
                time.sleep(0.25)  # blocks the reactor: everything waits, then catches up
        return np.full((1, BLOCK), tick, dtype=np.float32)


class FaultySourceCase(HostileCase):
    fault = "raise"

    def sources(self) -> list[Any]:
        self.faulty = FaultySource(self.fault, at=30)
        return [*(build_source(s) for s in self.config().sources), self.faulty]

    @inlineCallbacks
    def stream_through_the_fault(self) -> Any:
        _, healthy = yield self.streaming()
        yield healthy.wait_for(60)
        yield self.still_healthy(healthy, 30)
        return healthy.packets


class RaisingSourceTests(FaultySourceCase):
    @inlineCallbacks
    def test_its_signal_stops_the_others_go_on(self) -> Any:
        packets = yield self.stream_through_the_fault()
        flags = [p.flags for p in packets]
        self.assertEqual(flags[0], 0x21)
        self.assertEqual(flags[-1], 0x01)  # bp gone, eeg exact and gap-free
        self.assertEqual(sorted(flags, reverse=True), flags)  # once gone, it stays gone
        self.assertEqual(self.logged("source [bp] failed"), 1)
        self.assertEqual(self.logged("the amplifier was unplugged"), 1)


class MiscountingSourceTests(FaultySourceCase):
    fault = "count"

    @inlineCallbacks
    def test_wrong_number_of_values_is_a_failure(self) -> Any:
        packets = yield self.stream_through_the_fault()
        self.assertEqual(packets[-1].flags, 0x01)
        self.assertEqual(self.logged("delivered values of shape (11,)"), 1)


class HangingSourceTests(FaultySourceCase):
    fault = "hang"

    @inlineCallbacks
    def test_a_hang_is_caught_up_without_duplicates(self) -> Any:
        packets = yield self.stream_through_the_fault()
        self.assertTrue(all(p.flags == 0x21 for p in packets))  # it recovered by itself
        for packet in packets:  # bp carries its own tick: nothing duplicated, nothing skipped
            self.assertTrue(np.all(packet.signals[0x20] == packet.packet_id))
        self.assertGreaterEqual(self.logged("catching up"), 1)  # more if the machine is busy
        self.assertGreaterEqual(self.service.clock.longest_catch_up, 20)


class ReactorStallTests(HostileCase):
    """The whole reactor stops for 2 s (GC pause, suspend, a blocking call)."""

    @inlineCallbacks
    def test_catch_up_sends_every_missed_tick(self) -> Any:
        _, healthy = yield self.streaming()
        yield task.deferLater(reactor, 0, time.sleep, 2.0)  # the stall under test; over when this fires
        yield self.still_healthy(healthy, 50)  # check_stream: ids and numbers consecutive, values exact
        ids = [p.packet_id for p in healthy.packets]
        self.assertEqual(len(set(ids)), len(ids))
        self.assertGreaterEqual(self.service.clock.longest_catch_up, 190)
        self.assertTrue(any(
            "catching up" in text and float(text.split("stalled for ")[1].split(" s")[0]) >= 1.9
            for _, text in self.log.lines
        ))


class ReactorStallSkipTests(HostileCase):
    server_extra = "stall_policy = skip"

    @inlineCallbacks
    def test_skip_jumps_the_packet_ids_without_duplicates(self) -> Any:
        _, healthy = yield self.streaming()
        yield task.deferLater(reactor, 0, time.sleep, 2.0)  # the stall under test; over when this fires
        yield healthy.wait_for(len(healthy.packets) + 50)
        packets = healthy.packets
        numbers = [p.connection_number for p in packets]
        self.assertEqual(numbers, list(range(len(numbers))))  # nothing was dropped for this client
        ids = [p.packet_id for p in packets]
        steps = [b - a for a, b in pairwise(ids)]
        jumps = [step for step in steps if step != 1]
        self.assertTrue(all(step > 1 for step in jumps))  # never backwards, never twice the same id
        self.assertGreaterEqual(max(jumps), 190)  # the 2 s stall (a busy machine may add short ones)
        for packet in packets:  # values and timestamps follow the packet id
            np.testing.assert_array_equal(packet.signals[1], ramp_values(CHANNELS, packet.packet_id * BLOCK, BLOCK))
            self.assertEqual(packet.timestamp, packet.packet_id * 10_000)
        # each jump is skipped ticks, each logged (more if one happened before this client joined)
        self.assertGreaterEqual(self.service.clock.skipped_ticks, sum(jumps) - len(jumps))
        self.assertGreaterEqual(self.logged("(stall_policy = skip)"), len(jumps))


# ----------------------------------------------------------------- units: guards, UDP, config


def test_stall_policies_on_a_fake_clock() -> None:
    runs = {}
    for policy in ("catch-up", "skip"):
        ticks: list[int] = []
        fake = Clock()

        def produce(first: int, count: int, ticks: list[int] = ticks) -> None:
            ticks.extend(range(first, first + count))

        clock = MasterClock(Fraction(100), produce, fake, policy)
        clock.start()
        fake.advance(0.0105)
        fake.advance(0.05)  # 5 intervals late: below the threshold, always caught up
        fake.advance(2.0)  # a 2 s stall
        fake.advance(0.01)
        runs[policy] = (ticks, clock)
    ticks, clock = runs["catch-up"]
    assert ticks == list(range(len(ticks))) and len(ticks) == 208
    assert (clock.late_ticks, clock.skipped_ticks) == (203, 0)
    ticks, clock = runs["skip"]
    assert ticks[:7] == list(range(7))  # the short lateness was caught up
    assert ticks[7:] == [206, 207]  # then the stall was skipped: the ids jump, none repeats
    assert (clock.late_ticks, clock.skipped_ticks) == (4, 199)
    with pytest.raises(ValueError, match="stall_policy"):
        MasterClock(Fraction(100), lambda first, count: None, Clock(), "rewind")


def test_udp_send_errors_are_counted_not_fatal() -> None:
    class FullBuffer:
        def __init__(self) -> None:
            self.writes = 0

        def write(self, datagram: bytes, address: tuple[str, int]) -> None:
            self.writes += 1
            if self.writes % 2:
                raise OSError(errno.ENOBUFS, "No buffer space available")

    with LogCapture() as log:
        sender = UDPSender()
        sender.transport = FullBuffer()  # type: ignore[assignment]  # a fake: only the write the sender uses
        for _ in range(4000):
            sender.send(b"x", ("127.0.0.1", 9))
    assert (sender.sent, sender.errors) == (2000, 2000)
    assert log.count("UDP send to") == 3  # 1st, 1000th, 2000th


def test_rate_limited_log_says_it_once_then_counts() -> None:
    now = [0.0]
    events: list[dict[str, Any]] = []

    class Sink(Logger):
        def emit(self, level: LogLevel, format: str | None = None, **fields: Any) -> None:
            events.append({"log_format": format, **fields})

    limited = RateLimitedLog(Sink(), interval=60, seconds=lambda: now[0])
    assert limited.emit("k", "refused {host}", host="a")
    for _ in range(99):
        assert not limited.emit("k", "refused {host}", host="a")
    assert limited.emit("other", "refused {host}", host="b")  # another key: its own first line
    now[0] = 61
    assert limited.emit("k", "refused {host}", host="a")
    assert len(events) == 3 and events[2]["similar"] == 99
    assert "99 similar events" in formatEvent(events[2])
    assert limited.suppressed == 99


def test_request_budget_refills_at_its_rate() -> None:
    now = [0.0]
    budget = RequestBudget(10, lambda: now[0])
    assert all(budget.take() for _ in range(10))
    assert not budget.take()
    now[0] = 0.5
    assert [budget.take() for _ in range(6)] == [True] * 5 + [False]
    now[0] = -100.0  # a wall clock stepping back refills nothing and breaks nothing
    assert not budget.take()
    assert RequestBudget(0, lambda: 0.0).take()  # 0 = off


@pytest.mark.parametrize(
    ("networks", "host", "allowed"),
    [
        ("", "203.0.113.5", True),
        ("10.0.0.0/8", "10.1.2.3", True),
        ("10.0.0.0/8", "127.0.0.1", False),
        ("10.0.0.0/8", "::ffff:10.1.2.3", True),
        ("::1", "::1", True),
        ("127.0.0.0/8", "::1", False),
        ("127.0.0.0/8", "not an address", False),
    ],
)
def test_allow_list_matching(networks: str, host: str, allowed: bool) -> None:
    config = ramp_config(server_extra=f"allow = {networks}")
    assert host_allowed(host, config.allow) is allowed


@pytest.mark.parametrize(
    ("control", "interface", "warned"),
    [
        ("tcp:9000:interface=127.0.0.1", "127.0.0.1", False),
        ("tcp:9000:interface=localhost", "localhost", False),
        (r"tcp6:9000:interface=\:\:1", "::1", False),
        ("tcp:9000", None, True),
        ("tcp:port=9000:interface=0.0.0.0", "0.0.0.0", True),
        ("tcp:9000:interface=192.168.1.20", "192.168.1.20", True),
        ("ssl:9443:privateKey=k.pem:interface=10.0.0.2", "10.0.0.2", True),
        ("unix:/run/tia.sock", "", False),
    ],
)
def test_exposure_warning(control: str, interface: str | None, warned: bool) -> None:
    assert endpoint_interface(control) == interface
    warning = exposure_warning(control)
    assert (warning is not None) is warned
    if warning:
        assert "no authentication or encryption" in warning


class ExposureTests(HostileCase):
    def config(self) -> ServerConfig:
        return replace(super().config(), control="tcp:0:interface=0.0.0.0")

    def test_binding_beyond_loopback_is_logged_at_start(self) -> None:
        self.assertEqual(len(self.log.find("warn", "the control port listens on every interface")), 1)


class LoopbackTests(HostileCase):
    def test_the_default_loopback_binding_is_not_warned_about(self) -> None:
        self.assertEqual(self.logged("the control port listens"), 0)


def test_guard_config_keys_and_their_errors() -> None:
    config = ramp_config(
        server_extra="idle_timeout = 0\nmax_connections = 0\nrequest_rate = 50\nstall_policy = Skip\n"
        "allow = 192.168.1.0/24, 10.1.2.3"
    )
    assert (config.idle_timeout, config.max_connections, config.request_rate, config.stall_policy) == (
        0.0, 0, 50, "skip"
    )
    assert [str(n) for n in config.allow] == ["192.168.1.0/24", "10.1.2.3/32"]
    defaults = ramp_config()
    assert (defaults.idle_timeout, defaults.max_connections, defaults.request_rate) == (60.0, 64, 200)
    assert (defaults.allow, defaults.stall_policy) == ((), "catch-up")
    for line, key in [
        ("idle_timeout = -1", "idle_timeout"),
        ("idle_timeout = soon", "idle_timeout"),
        ("max_connections = many", "max_connections"),
        ("request_rate = -3", "request_rate"),
        ("stall_policy = rewind", "stall_policy"),
        ("allow = 10.0.0.0/33", "allow"),
    ]:
        with pytest.raises(ConfigError) as info:
            config_from_text(
                f"[server]\n{line}\n[source:eeg]\ndriver = ramp\nrate = 10\nchannels = 1\ntype = eeg\n"
            )
        assert f"test.ini [server] {key}:" in str(info.value)


def one_sample_tick(tick: int) -> Tick:
    return Tick.from_blocks(tick, tick * 1000, [(1, np.full((1, 1), tick, np.float32))])


class WriteCountingTransport(StringTransport):
    """A StringTransport that keeps the length of each ``writeSequence``."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[int] = []

    def writeSequence(self, data: Iterable[bytes]) -> None:
        data = list(data)
        self.writes.append(len(data))
        super().writeSequence(data)


def test_a_catch_up_batch_goes_out_in_one_write_with_every_packet_in_order() -> None:
    protocol = TCPDataProtocol(1 << 20, lambda _: None)
    transport = WriteCountingTransport()
    writes = transport.writes
    protocol.makeConnection(transport)
    protocol.deliver([one_sample_tick(tick) for tick in range(5)])
    assert len(writes) == 1
    decoder = PacketStreamDecoder()
    packets = decoder.feed(transport.value())
    assert [(p.packet_id, p.connection_number) for p in packets] == [(t, t) for t in range(5)]
    assert [float(p.signals[1][0, 0]) for p in packets] == [0.0, 1.0, 2.0, 3.0, 4.0]
    protocol.deliver([one_sample_tick(5)])  # on time again: a write per packet
    assert len(writes) == 2


def test_a_paused_client_drops_within_a_batch_beyond_its_backlog_and_sees_the_gap() -> None:
    size = 33 + 8  # one packet of one sample
    protocol = TCPDataProtocol(3 * size, lambda _: None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.pauseProducing()  # the client stopped reading
    protocol.deliver([one_sample_tick(tick) for tick in range(5)])
    assert (protocol.packets, protocol.dropped) == (5, 2)
    protocol.resumeProducing()
    protocol.deliver([one_sample_tick(5)])
    numbers = [p.connection_number for p in PacketStreamDecoder().feed(transport.value())]
    assert numbers == [0, 1, 2, 5]  # 3 and 4 were dropped: the client sees the gap
