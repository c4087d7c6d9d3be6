"""The Twisted client (tia.client.control, .data, .stream): protocol units on StringTransport, the data and
state channels, TiAStream on MemoryReactor with a fake clock, iosim, and end to end
against a small fake TiA server on 127.0.0.1 written here (the real daemon is not used).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
from support import port_number, server_factory
from twisted.internet import defer
from twisted.internet import reactor as globalReactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorUDP, ITCPTransport
from twisted.internet.protocol import DatagramProtocol, Protocol, connectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial import unittest
from zope.interface import implementer

from tia.client.control import TiAControlProtocol, connectTiA
from tia.client.data import GapDetector, TiAServerStateProtocol, TiATCPDataProtocol, TiAUDPDataProtocol
from tia.client.errors import TiAClientError, TiAConnectionLost, TiAProtocolError, TiAServerError
from tia.client.stream import TiAStream
from tia.protocol.control import (
    SERVER_STATE_RUNNING,
    SERVER_STATE_SHUTDOWN,
    Command,
    ControlMessage,
    ControlParser,
    build_error,
    build_message,
)
from tia.protocol.metainfo import MetaInfo
from tia.protocol.packet import DataPacket, encode_packet

EEG, BP, BUTTON = 0x01, 0x20, 0x40
E = TypeVar("E", bound=BaseException)

OK = b"TiA 1.0\nOK\n\n"

# The reference's own layout: tabs, no declaration, "\n\n" counted in Content-Length.
REFERENCE_METAINFO = (
    b'<tiaMetaInfo version="1.0">\n'
    b'\t<subject id="S01" firstName="Ada" surname="L"/>\n'
    b'\t<masterSignal samplingRate="500" blockSize="10"/>\n'
    b'\t<signal type="eeg" samplingRate="500" blockSize="10" numChannels="3">\n'
    b'\t\t<channel nr="1" label="Cz"/>\n'
    b'\t\t<channel nr="2" label="C3"/>\n'
    b'\t\t<channel nr="3" label="C4"/>\n'
    b"\t</signal>\n"
    b'\t<signal type="bp" samplingRate="250" blockSize="5" numChannels="1">\n'
    b'\t\t<channel nr="1" label="BP"/>\n'
    b"\t</signal>\n"
    b"</tiaMetaInfo>\n\n"
)
METAINFO_REPLY = build_message(Command.METAINFO, content=REFERENCE_METAINFO)
PERIOD = 10 / 500  # seconds per packet (tick) of REFERENCE_METAINFO


def makeControl() -> tuple[TiAControlProtocol, StringTransport]:
    protocol = TiAControlProtocol()
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 9000))
    protocol.makeConnection(transport)
    return protocol, transport


def result(d: Deferred[Any]) -> Any:
    """The value of an already fired Deferred (no reactor needed)."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def failure(d: Deferred[Any]) -> Failure:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box and isinstance(box[0], Failure), f"expected a failure, got {box!r}"
    return box[0]


def errorOf(d: Deferred[Any], kind: type[E]) -> E:
    """The exception a fired Deferred failed with; it must be a ``kind``."""
    caught = failure(d)
    caught.trap(kind)
    assert isinstance(caught.value, kind)
    return caught.value


def blocks(tick: int, withButton: bool = False) -> list[tuple[int, np.ndarray]]:
    eeg = np.arange(30, dtype=np.float32).reshape(3, 10) + tick * 100
    bp = np.full((1, 5), -tick, dtype=np.float32)
    result = [(EEG, eeg), (BP, bp)]
    if withButton:
        result.append((BUTTON, np.array([[1.0]], dtype=np.float32)))
    return result


def packetBytes(packetId: int, connectionNumber: int, withButton: bool = False) -> bytes:
    return encode_packet(packetId, connectionNumber, packetId * 20000, blocks(packetId, withButton))


def assertPacket(
    test: unittest.TestCase, packet: DataPacket, packetId: int, connectionNumber: int
) -> None:
    test.assertEqual(packet.packet_id, packetId)
    test.assertEqual(packet.connection_number, connectionNumber)
    test.assertEqual(packet.timestamp, packetId * 20000)
    expected = dict(blocks(packetId, withButton=bool(packet.flags & BUTTON)))
    test.assertEqual(sorted(packet.signals), sorted(expected))
    for flag, samples in expected.items():
        test.assertEqual(packet.signals[flag].shape, samples.shape)
        np.testing.assert_array_equal(packet.signals[flag], samples)


# -- control protocol units ---------------------------------------------------------


class ControlRequestBytesTests(unittest.TestCase):
    """Every command sends exactly the reference client's bytes."""

    def check(self, call: Callable[[TiAControlProtocol], object], expected: bytes) -> None:
        protocol, transport = makeControl()
        call(protocol)
        self.assertEqual(transport.value(), expected)

    def test_commands(self) -> None:
        cases: list[tuple[Callable[[TiAControlProtocol], object], bytes]] = [
            (lambda p: p.checkProtocolVersion(), b"TiA 1.0\nCheckProtocolVersion\n\n"),
            (lambda p: p.getMetaInfo(), b"TiA 1.0\nGetMetaInfo\n\n"),
            (lambda p: p.getDataConnection("TCP"), b"TiA 1.0\nGetDataConnection:TCP\n\n"),
            (lambda p: p.getDataConnection("UDP"), b"TiA 1.0\nGetDataConnection:UDP\n\n"),
            (lambda p: p.start(), b"TiA 1.0\nStartDataTransmission\n\n"),
            (lambda p: p.stop(), b"TiA 1.0\nStopDataTransmission\n\n"),
            (lambda p: p.getServerStateConnection(), b"TiA 1.0\nGetServerStateConnection\n\n"),
            (
                lambda p: p.setCustomSignalInfo(b"<x/>"),
                b"TiA 1.0\nSetCustomSignalInfo\nContent-Length:4\n\n<x/>",
            ),
            (lambda p: p.request("FooBar"), b"TiA 1.0\nFooBar\n\n"),
            (lambda p: p.request("Foo", "bar", b"xy"), b"TiA 1.0\nFoo:bar\nContent-Length:2\n\nxy"),
        ]
        for call, expected in cases:
            self.check(call, expected)

    def test_invalid_transport_is_refused_without_sending(self) -> None:
        protocol, transport = makeControl()
        failure(protocol.getDataConnection("tcp")).trap(ValueError)  # type: ignore[arg-type]  # the wrong value under test
        self.assertEqual(transport.value(), b"")

    def test_request_with_newline_fails_without_sending(self) -> None:
        protocol, transport = makeControl()
        failure(protocol.request("Foo\nBar")).trap(ValueError)
        self.assertEqual(transport.value(), b"")


class ControlReplyTests(unittest.TestCase):
    """Replies decoded whatever the segmentation, errors in all three forms."""

    def everySplit(
        self,
        call: Callable[[TiAControlProtocol], Deferred[Any]],
        reply: bytes,
        check: Callable[[Deferred[Any]], None],
    ) -> None:
        """Feed ``reply`` cut in two at every boundary, then one byte at a time."""
        for cut in range(len(reply) + 1):
            protocol, _ = makeControl()
            d = call(protocol)
            protocol.dataReceived(reply[:cut])
            if cut < len(reply):
                self.assertFalse(d.called, f"fired early at cut {cut}")
            protocol.dataReceived(reply[cut:])
            check(d)
        protocol, _ = makeControl()
        d = call(protocol)
        for index in range(len(reply)):
            self.assertFalse(d.called)
            protocol.dataReceived(reply[index : index + 1])
        check(d)

    def test_ok(self) -> None:
        self.everySplit(
            lambda p: p.checkProtocolVersion(), OK, lambda d: self.assertIsNone(result(d))
        )

    def test_data_connection_port_liberal_forms(self) -> None:
        for reply in (
            b"TiA 1.0\nDataConnectionPort:43033\n\n",
            b"TiA 1.0\r\nDataConnectionPort: 43033 \r\n\r\n",
            b"\nTiA 1.0\nDataConnectionPort:\t43033\n\n",
        ):
            self.everySplit(
                lambda p: p.getDataConnection("TCP"),
                reply,
                lambda d: self.assertEqual(result(d), 43033),
            )

    def test_server_state_port(self) -> None:
        self.everySplit(
            lambda p: p.getServerStateConnection(),
            b"TiA 1.0\nServerStateConnectionPort:38431\n\n",
            lambda d: self.assertEqual(result(d), 38431),
        )

    def test_metainfo_content_split_everywhere(self) -> None:
        expected = MetaInfo.from_xml(REFERENCE_METAINFO)

        def check(d: Deferred[Any]) -> None:
            metainfo = result(d)
            self.assertEqual(metainfo, expected)
            self.assertEqual(metainfo.signal("eeg").labels, ("Cz", "C3", "C4"))
            self.assertEqual(metainfo.master_sampling_rate, 500)

        self.everySplit(lambda p: p.getMetaInfo(), METAINFO_REPLY, check)

    def test_metainfo_with_declaration_then_next_reply_in_same_chunk(self) -> None:
        xml = b'<?xml version="1.0" encoding="UTF-8"?>\n' + REFERENCE_METAINFO
        protocol, _ = makeControl()
        first = protocol.getMetaInfo()
        second = protocol.getDataConnection("TCP")
        protocol.dataReceived(
            build_message("MetaInfo", content=xml) + b"TiA 1.0\nDataConnectionPort:5\n\n"
        )
        self.assertEqual(result(first).signal("bp").block_size, 5)
        self.assertEqual(result(second), 5)

    def test_error_forms(self) -> None:
        cases = [
            (b"TiA 1.0\nError\n\n", "Error", Command.ERROR),
            (
                b"TiA 1.0\nError -- Target and remote subnet do not match!\n\n",
                "Target and remote subnet do not match!",
                Command.ERROR,
            ),
            (
                build_message(
                    "Error", content=b'<tiaError version="1.0" description="no such thing"/>'
                ),
                "no such thing",
                Command.ERROR,
            ),
            (b"TiA 1.0\nValidationError\n\n", "ValidationError", Command.VALIDATION_ERROR),
        ]
        for reply, text, command in cases:

            def check(d: Deferred[Any], text: str = text, command: str = command) -> None:
                error = errorOf(d, TiAServerError)
                self.assertEqual(error.text, text)
                self.assertEqual(str(error), text)
                self.assertEqual(error.command, command)

            self.everySplit(lambda p: p.start(), reply, check)

    def test_connection_usable_after_error(self) -> None:
        protocol, transport = makeControl()
        bad = protocol.request("FooBar")
        good = protocol.checkProtocolVersion()
        protocol.dataReceived(build_error() + OK)
        failure(bad).trap(TiAServerError)
        self.assertIsNone(result(good))
        self.assertFalse(transport.disconnecting)

    def test_pipelined_requests_matched_in_order(self) -> None:
        protocol, transport = makeControl()
        version = protocol.checkProtocolVersion()
        metainfo = protocol.getMetaInfo()
        port = protocol.getDataConnection("UDP")
        error = protocol.request("FooBar")
        start = protocol.start()
        self.assertEqual(
            transport.value(),
            b"TiA 1.0\nCheckProtocolVersion\n\n"
            b"TiA 1.0\nGetMetaInfo\n\n"
            b"TiA 1.0\nGetDataConnection:UDP\n\n"
            b"TiA 1.0\nFooBar\n\n"
            b"TiA 1.0\nStartDataTransmission\n\n",
        )
        replies = (
            OK
            + METAINFO_REPLY
            + b"TiA 1.0\nDataConnectionPort:50123\n\n"
            + build_error("unknown command")
            + OK
        )
        for index in range(len(replies)):
            protocol.dataReceived(replies[index : index + 1])
        self.assertIsNone(result(version))
        self.assertEqual(result(metainfo).subject.id, "S01")
        self.assertEqual(result(port), 50123)
        self.assertEqual(errorOf(error, TiAServerError).text, "unknown command")
        self.assertIsNone(result(start))

    def test_generic_request_returns_the_message(self) -> None:
        protocol, _ = makeControl()
        d = protocol.request("Custom", "x")
        protocol.dataReceived(b"TiA 1.0\nSomething:else\nContent-Length:3\n\nabc")
        self.assertEqual(result(d), ControlMessage("Something", "else", b"abc"))

    def test_unexpected_reply_kind(self) -> None:
        protocol, _ = makeControl()
        d = protocol.getDataConnection("TCP")
        protocol.dataReceived(OK)
        self.assertIn("expected the reply", str(errorOf(d, TiAProtocolError)))

    def test_invalid_port(self) -> None:
        for bad in (b"abc", b"0", b"70000", b""):
            protocol, _ = makeControl()
            d = protocol.getDataConnection("TCP")
            protocol.dataReceived(b"TiA 1.0\nDataConnectionPort:" + bad + b"\n\n")
            failure(d).trap(TiAProtocolError)

    def test_bad_metainfo(self) -> None:
        protocol, transport = makeControl()
        d = protocol.getMetaInfo()
        protocol.dataReceived(build_message("MetaInfo", content=b"<nope/>"))
        failure(d).trap(TiAProtocolError)
        self.assertFalse(transport.disconnecting)

    def test_cancelled_request_still_consumes_its_reply(self) -> None:
        protocol, _ = makeControl()
        first = protocol.getDataConnection("TCP")
        second = protocol.getServerStateConnection()
        first.cancel()
        failure(first).trap(defer.CancelledError)
        protocol.dataReceived(
            b"TiA 1.0\nDataConnectionPort:1\n\nTiA 1.0\nServerStateConnectionPort:2\n\n"
        )
        self.assertEqual(result(second), 2)


class ControlFailureTests(unittest.TestCase):
    def test_connection_lost_fails_pending(self) -> None:
        protocol, _ = makeControl()
        first = protocol.checkProtocolVersion()
        second = protocol.getMetaInfo()
        closed = protocol.whenClosed()
        protocol.dataReceived(b"TiA 1.0\nO")
        protocol.connectionLost(Failure(ConnectionLost("gone")))
        for d in (first, second):
            lost = errorOf(d, TiAConnectionLost)
            self.assertIsNotNone(lost.reason)
            self.assertIn("gone", str(lost))
        self.assertIsNone(result(closed))
        self.assertIsNone(result(protocol.whenClosed()))
        failure(protocol.start()).trap(TiAConnectionLost)

    def test_not_connected(self) -> None:
        failure(TiAControlProtocol().checkProtocolVersion()).trap(TiAConnectionLost)

    def test_bad_framing_closes_and_fails(self) -> None:
        for garbage in (
            b"TiA 2.0\nOK\n\n",
            b"TiA 1.0\nOK\nX-Header:1\n\n",
            b"TiA 1.0\nMetaInfo\nContent-Length:abc\n\n",
            b"TiA 1.0\nOK\n" + b"x" * 5000,
        ):
            protocol, transport = makeControl()
            first = protocol.checkProtocolVersion()
            second = protocol.getMetaInfo()
            protocol.dataReceived(garbage)
            self.assertTrue(transport.disconnecting, garbage)
            failure(first).trap(TiAProtocolError)
            failure(second).trap(TiAProtocolError)
            # Later requests fail at once; later bytes are ignored.
            failure(protocol.start()).trap(TiAProtocolError)
            protocol.dataReceived(OK)
            protocol.connectionLost(connectionDone)

    def test_unsolicited_reply_is_a_protocol_error(self) -> None:
        protocol, transport = makeControl()
        protocol.dataReceived(OK)
        self.assertTrue(transport.disconnecting)
        failure(protocol.start()).trap(TiAProtocolError)


class IOSimTests(unittest.TestCase):
    """Client and a fake server protocol wired in memory by twisted.test.iosim."""

    def test_round_trip(self) -> None:
        client, server, pump = iosim.connectedServerAndClient(
            FakeControlProtocol.standalone, TiAControlProtocol
        )
        version = client.checkProtocolVersion()
        metainfo = client.getMetaInfo()
        unknown = client.request("FooBar")
        port = client.getServerStateConnection()
        pump.flush()
        self.assertIsNone(result(version))
        self.assertEqual(result(metainfo), MetaInfo.from_xml(REFERENCE_METAINFO))
        failure(unknown).trap(TiAServerError)
        self.assertEqual(result(port), 4242)
        self.assertEqual(
            server.requests,
            [
                ("CheckProtocolVersion", None),
                ("GetMetaInfo", None),
                ("FooBar", None),
                ("GetServerStateConnection", None),
            ],
        )


# -- data and state channels ---------------------------------------------------


@implementer(ITCPTransport)
class TCPStringTransport(StringTransport):
    """A StringTransport that claims to be TCP and records the no-delay setting."""

    noDelay: bool | None = None
    keepAlive = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.noDelay = enabled

    def getTcpNoDelay(self) -> bool:
        return bool(self.noDelay)

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self.keepAlive = enabled

    def getTcpKeepAlive(self) -> bool:
        return self.keepAlive

    def loseWriteConnection(self) -> None:
        raise NotImplementedError("the client never half-closes")


class DataProtocolTests(unittest.TestCase):
    def stream(self) -> bytes:
        return (
            packetBytes(7, 0)
            + packetBytes(8, 1, withButton=True)
            + encode_packet(9, 2, 9 * 20000, [])  # an empty packet is 33 bytes
            + packetBytes(10, 3)
        )

    def check(self, packets: list[DataPacket]) -> None:
        self.assertEqual([p.packet_id for p in packets], [7, 8, 9, 10])
        for packet in packets:
            if packet.packet_id == 9:
                self.assertEqual((packet.flags, packet.signals), (0, {}))
            else:
                assertPacket(self, packet, packet.packet_id, packet.packet_id - 7)
        self.assertEqual(packets[1].signals[BUTTON].shape, (1, 1))

    def test_stream_split_at_every_boundary(self) -> None:
        data = self.stream()
        for cut in range(len(data) + 1):
            packets: list[DataPacket] = []
            protocol = TiATCPDataProtocol(packets.append)
            protocol.makeConnection(StringTransport())
            protocol.dataReceived(data[:cut])
            protocol.dataReceived(data[cut:])
            self.check(packets)
            self.assertEqual(protocol.gaps.gaps, 0)

    def test_stream_byte_by_byte(self) -> None:
        data = self.stream()
        packets: list[DataPacket] = []
        protocol = TiATCPDataProtocol(packets.append)
        protocol.makeConnection(StringTransport())
        for index in range(len(data)):
            protocol.dataReceived(data[index : index + 1])
        self.check(packets)
        self.assertEqual(protocol.packets_received, 4)

    def test_no_delay_only_on_tcp(self) -> None:
        transport = TCPStringTransport()
        TiATCPDataProtocol(lambda p: None).makeConnection(transport)
        self.assertIs(transport.noDelay, True)
        TiATCPDataProtocol(lambda p: None).makeConnection(StringTransport())  # no error

    def test_valid_packets_before_a_bad_one_in_the_same_chunk_are_delivered(self) -> None:
        packets: list[DataPacket] = []
        protocol = TiATCPDataProtocol(packets.append)
        transport = StringTransport()
        protocol.makeConnection(transport)
        bad = bytearray(packetBytes(2, 2))
        bad[0] = 2
        protocol.dataReceived(packetBytes(0, 0) + packetBytes(1, 1) + bytes(bad))
        self.assertEqual([p.packet_id for p in packets], [0, 1])
        self.assertTrue(transport.disconnecting)

    def test_bad_packet_drops_the_connection(self) -> None:
        packets: list[DataPacket] = []
        protocol = TiATCPDataProtocol(packets.append)
        transport = StringTransport()
        protocol.makeConnection(transport)
        closed = protocol.whenClosed()
        bad = bytearray(packetBytes(1, 0))
        bad[0] = 2  # version 2
        protocol.dataReceived(packetBytes(0, 0))
        protocol.dataReceived(bytes(bad))
        self.assertTrue(transport.disconnecting)
        protocol.dataReceived(packetBytes(2, 1))  # ignored: the stream is not trusted
        self.assertFalse(closed.called)
        protocol.connectionLost(connectionDone)
        error = failure(closed)
        error.trap(TiAProtocolError)
        self.assertIn("version", str(error.value))
        self.assertEqual([p.packet_id for p in packets], [0])
        failure(protocol.whenClosed()).trap(TiAProtocolError)
        self.assertIsNone(result(protocol.close()))

    def test_clean_close(self) -> None:
        protocol = TiATCPDataProtocol(lambda p: None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        closing = protocol.close()
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(connectionDone)
        self.assertIsNone(result(closing))

    def test_gaps_reported(self) -> None:
        gaps: list[tuple[int, int]] = []
        packets: list[DataPacket] = []
        protocol = TiATCPDataProtocol(packets.append, lambda e, g: gaps.append((e, g)))
        protocol.makeConnection(StringTransport())
        for number in (5, 6, 9, 10):
            protocol.dataReceived(packetBytes(number, number))
        self.assertEqual(gaps, [(7, 9)])
        self.assertEqual((protocol.gaps.gaps, protocol.gaps.lost), (1, 2))
        self.assertEqual(len(packets), 4)

    def test_gap_detector_late_and_duplicate(self) -> None:
        gaps: list[tuple[int, int]] = []
        detector = GapDetector(lambda e, g: gaps.append((e, g)))
        for number in (0, 1, 3, 2, 4, 4, 5):
            detector.check(number)
        self.assertEqual(gaps, [(2, 3), (4, 2), (5, 4)])
        self.assertEqual(detector.expected, 6)
        # 2 was missing only until it came: late, not lost; the second 4 is a repeat
        self.assertEqual(
            (detector.received, detector.gaps, detector.lost, detector.reordered, detector.duplicates), (6, 1, 0, 1, 1)
        )

    def test_raising_callbacks_are_logged_not_fatal(self) -> None:
        seen: list[int] = []

        def onPacket(packet: DataPacket) -> None:
            seen.append(packet.packet_id)
            raise ZeroDivisionError

        def onGap(expected: int, got: int) -> None:
            raise KeyError

        protocol = TiATCPDataProtocol(onPacket, onGap)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(packetBytes(0, 0) + packetBytes(2, 2))
        self.assertEqual(seen, [0, 2])
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_udp(self) -> None:
        packets: list[DataPacket] = []
        gaps: list[tuple[int, int]] = []
        protocol = TiAUDPDataProtocol(packets.append, lambda e, g: gaps.append((e, g)))
        self.assertEqual(protocol.max_packet_size, 65535)
        source = ("127.0.0.1", 5000)
        protocol.datagramReceived(packetBytes(3, 0), source)
        protocol.datagramReceived(b"\x03garbage", source)
        protocol.datagramReceived(packetBytes(4, 1)[:-1], source)  # truncated
        protocol.datagramReceived(packetBytes(6, 3), source)
        self.assertEqual([p.packet_id for p in packets], [3, 6])
        assertPacket(self, packets[1], 6, 3)
        self.assertEqual(protocol.bad_datagrams, 2)
        self.assertEqual(gaps, [(1, 3)])


    def test_udp_late_packets_delivered_and_repeats_dropped(self) -> None:
        packets: list[DataPacket] = []
        gaps: list[tuple[int, int]] = []
        protocol = TiAUDPDataProtocol(packets.append, lambda e, g: gaps.append((e, g)))
        for number in (0, 2, 1, 2, 3):
            protocol.datagramReceived(packetBytes(number, number), ("127.0.0.1", 5000))
        self.assertEqual([p.connection_number for p in packets], [0, 2, 1, 3])
        self.assertEqual(gaps, [(1, 2), (3, 1), (3, 2)])
        self.assertEqual(protocol.packets_received, 4)
        detector = protocol.gaps
        self.assertEqual((detector.gaps, detector.lost, detector.reordered, detector.duplicates), (1, 0, 1, 1))


class ServerStateProtocolTests(unittest.TestCase):
    def test_states(self) -> None:
        data = SERVER_STATE_RUNNING + SERVER_STATE_RUNNING + SERVER_STATE_SHUTDOWN
        for cut in range(len(data) + 1):
            states: list[str] = []
            protocol = TiAServerStateProtocol(states.append)
            protocol.makeConnection(StringTransport())
            protocol.dataReceived(data[:cut])
            protocol.dataReceived(data[cut:])
            self.assertEqual(
                states, ["ServerStateRunning", "ServerStateRunning", "ServerStateShutdown"]
            )
            self.assertEqual(protocol.state, "ServerStateShutdown")

    def test_garbage_closes(self) -> None:
        states: list[str] = []
        protocol = TiAServerStateProtocol(states.append)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"TiA 1.0\nSomethingElse\n\n")  # unexpected but well formed
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(states, [])
        closing = protocol.close()
        protocol.connectionLost(connectionDone)
        self.assertIsNone(result(closing))


# -- TiAStream on a memory reactor --------------------------------------------------


class MemoryReactorUDP(MemoryReactorClock):
    """MemoryReactorClock plus a recording listenUDP."""

    def __init__(self) -> None:
        super().__init__()
        self.udpListens: list[tuple[int, DatagramProtocol, str, int]] = []
        self.udpStopped = 0

    def listenUDP(
        self, port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> FakeUDPPort:
        self.udpListens.append((port, protocol, interface, maxPacketSize))
        return FakeUDPPort(self)


class FakeUDPPort:
    def __init__(self, reactor: MemoryReactorUDP) -> None:
        self.reactor = reactor

    def stopListening(self) -> None:
        self.reactor.udpStopped += 1


class MemoryConnection:
    """One client connection the memory reactor was asked for, made by the test."""

    def __init__(self, reactor: MemoryReactorClock, index: int, host: str = "127.0.0.1") -> None:
        self.host, self.port, factory = reactor.tcpClients[index][:3]
        protocol = factory.buildProtocol(IPv4Address("TCP", self.host, self.port))
        assert isinstance(protocol, Protocol)
        self.protocol = protocol
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, self.port))
        self.protocol.makeConnection(self.transport)

    def sent(self) -> bytes:
        value: bytes = self.transport.value()
        self.transport.clear()
        return value

    def lose(self, reason: Failure = connectionDone) -> None:
        self.protocol.connectionLost(reason)


class StreamOnMemoryReactorTests(unittest.TestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorUDP()
        self.packets: list[DataPacket] = []
        self.gaps: list[tuple[int, int]] = []
        self.reconnects: list[float] = []
        self.disconnects: list[Failure] = []

    def makeStream(self, **kwargs: Any) -> TiAStream:
        return TiAStream(
            self.reactor,
            "tcp:127.0.0.1:9000",
            onPacket=self.packets.append,
            onGap=lambda e, g: self.gaps.append((e, g)),
            onReconnect=self.reconnects.append,
            onDisconnect=self.disconnects.append,
            **kwargs,
        )

    def handshake(
        self, index: int, dataPort: int = 50123
    ) -> tuple[MemoryConnection, MemoryConnection]:
        """Answer the set-up of the control connection number ``index`` (TCP data)."""
        control = MemoryConnection(self.reactor, index)
        self.assertEqual((control.host, control.port), ("127.0.0.1", 9000))
        self.assertEqual(control.sent(), b"TiA 1.0\nCheckProtocolVersion\n\n")
        control.protocol.dataReceived(OK)
        self.assertEqual(control.sent(), b"TiA 1.0\nGetMetaInfo\n\n")
        control.protocol.dataReceived(METAINFO_REPLY)
        self.assertEqual(control.sent(), b"TiA 1.0\nGetDataConnection:TCP\n\n")
        control.protocol.dataReceived(b"TiA 1.0\nDataConnectionPort:%d\n\n" % dataPort)
        self.assertEqual(control.sent(), b"")  # Start only once connected to the data port
        data = MemoryConnection(self.reactor, index + 1)
        self.assertEqual((data.host, data.port), ("127.0.0.1", dataPort))
        self.assertEqual(control.sent(), b"TiA 1.0\nStartDataTransmission\n\n")
        control.protocol.dataReceived(OK)
        return control, data

    def stopAndClose(
        self, stream: TiAStream, control: MemoryConnection, data: MemoryConnection | None
    ) -> None:
        stopping = stream.stop()
        self.assertEqual(control.sent(), b"TiA 1.0\nStopDataTransmission\n\n")
        self.assertFalse(stopping.called)
        control.protocol.dataReceived(OK)
        if data is not None:
            self.assertTrue(data.transport.disconnecting)
            data.lose()
        self.assertTrue(control.transport.disconnecting)
        control.lose()
        self.assertIsNone(result(stopping))
        self.assertFalse(stream.running)

    def test_tcp_session(self) -> None:
        stream = self.makeStream()
        starting = stream.start()
        control, data = self.handshake(0)
        metainfo = result(starting)
        self.assertEqual(metainfo, MetaInfo.from_xml(REFERENCE_METAINFO))
        self.assertIs(stream.metainfo, metainfo)
        self.assertTrue(stream.running)
        data.protocol.dataReceived(packetBytes(0, 0) + packetBytes(1, 1))
        self.assertEqual([p.packet_id for p in self.packets], [0, 1])
        self.stopAndClose(stream, control, data)
        self.assertEqual(self.disconnects, [])
        # stop() again is harmless and fires at once
        self.assertIsNone(result(stream.stop()))

    def test_udp_session(self) -> None:
        stream = self.makeStream(transport="UDP")
        starting = stream.start()
        control = MemoryConnection(self.reactor, 0)
        for request, reply in (
            (b"CheckProtocolVersion", OK),
            (b"GetMetaInfo", METAINFO_REPLY),
            (b"GetDataConnection:UDP", b"TiA 1.0\nDataConnectionPort:50200\n\n"),
            (b"StartDataTransmission", OK),
        ):
            self.assertEqual(control.sent(), b"TiA 1.0\n" + request + b"\n\n")
            control.protocol.dataReceived(reply)
        result(starting)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        ((port, protocol, interface, size),) = self.reactor.udpListens
        self.assertEqual((port, interface, size), (50200, "0.0.0.0", 65535))
        protocol.datagramReceived(packetBytes(4, 0), ("127.0.0.1", 1))
        protocol.datagramReceived(packetBytes(6, 2), ("127.0.0.1", 1))
        self.assertEqual([p.packet_id for p in self.packets], [4, 6])
        self.assertEqual(self.gaps, [(1, 2)])
        self.stopAndClose(stream, control, None)
        self.assertEqual(self.reactor.udpStopped, 1)

    def test_server_state_and_custom_signal_info(self) -> None:
        states: list[str] = []
        stream = self.makeStream(onServerState=states.append, customSignalInfo=b"<c/>")
        starting = stream.start()
        control = MemoryConnection(self.reactor, 0)
        control.sent()
        control.protocol.dataReceived(OK)
        control.sent()
        control.protocol.dataReceived(METAINFO_REPLY)
        self.assertEqual(control.sent(), b"TiA 1.0\nSetCustomSignalInfo\nContent-Length:4\n\n<c/>")
        control.protocol.dataReceived(OK)
        # the metainfo again: after SetCustomSignalInfo it describes this connection's stream
        self.assertEqual(control.sent(), b"TiA 1.0\nGetMetaInfo\n\n")
        control.protocol.dataReceived(METAINFO_REPLY)
        self.assertEqual(control.sent(), b"TiA 1.0\nGetServerStateConnection\n\n")
        control.protocol.dataReceived(b"TiA 1.0\nServerStateConnectionPort:38431\n\n")
        state = MemoryConnection(self.reactor, 1)
        self.assertEqual(state.port, 38431)
        state.protocol.dataReceived(SERVER_STATE_RUNNING)
        self.assertEqual(control.sent(), b"TiA 1.0\nGetDataConnection:TCP\n\n")
        control.protocol.dataReceived(b"TiA 1.0\nDataConnectionPort:50123\n\n")
        data = MemoryConnection(self.reactor, 2)
        control.sent()
        control.protocol.dataReceived(OK)
        result(starting)
        self.assertEqual(states, ["ServerStateRunning"])
        stopping = stream.stop()
        control.protocol.dataReceived(OK)
        self.assertTrue(state.transport.disconnecting)
        for connection in (data, state, control):
            connection.lose()
        self.assertIsNone(result(stopping))

    def test_server_error_fails_start_and_closes(self) -> None:
        for reconnect in (False, True):
            self.reactor = MemoryReactorUDP()
            stream = self.makeStream(reconnect=reconnect)
            starting = stream.start()
            control = MemoryConnection(self.reactor, 0)
            control.protocol.dataReceived(OK + METAINFO_REPLY + build_error("no data for you"))
            self.assertEqual(errorOf(starting, TiAServerError).text, "no data for you")
            self.assertTrue(control.transport.disconnecting)
            control.lose()
            self.assertFalse(stream.running)
            self.reactor.advance(0)
            self.assertEqual(self.reactor.getDelayedCalls(), [])  # no retry: start failed
            self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_stop_during_start(self) -> None:
        stream = self.makeStream()
        starting = stream.start()
        control = MemoryConnection(self.reactor, 0)
        control.protocol.dataReceived(OK)
        stopping = stream.stop()
        errorOf(starting, TiAClientError)
        self.assertEqual(
            control.sent(), b"TiA 1.0\nCheckProtocolVersion\n\nTiA 1.0\nGetMetaInfo\n\n"
        )
        self.assertTrue(control.transport.disconnecting)
        self.assertFalse(stopping.called)
        control.lose()
        self.assertIsNone(result(stopping))
        # and the stream can be started again afterwards
        stream.start()
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_reconnect_after_data_connection_loss(self) -> None:
        stream = self.makeStream(reconnect=True, retryPolicy=lambda attempt: 1.0)
        stream.start()
        control, data = self.handshake(0)
        data.protocol.dataReceived(packetBytes(0, 0))
        data.lose(Failure(ConnectionLost("data gone")))
        self.assertTrue(control.transport.disconnecting)  # we close control to start over
        control.lose()
        self.reactor.advance(1.0)
        control2, data2 = self.handshake(2)
        data2.protocol.dataReceived(packetBytes(3, 0))
        self.assertAlmostEqual(self.reconnects[0], 2 * PERIOD)
        self.assertEqual(self.disconnects, [])
        self.stopAndClose(stream, control2, data2)

    def test_set_up_timeout(self) -> None:
        stream = self.makeStream(timeout=5.0)
        starting = stream.start()
        control = MemoryConnection(self.reactor, 0)
        control.protocol.dataReceived(OK)
        self.reactor.advance(5.0)
        failure(starting).trap(defer.TimeoutError)
        self.assertTrue(control.transport.disconnecting)
        control.protocol.dataReceived(METAINFO_REPLY)  # the late reply is swallowed
        control.lose()

    def test_connect_failure_fails_start(self) -> None:
        for reconnect in (False, True):
            self.reactor = MemoryReactorUDP()
            stream = self.makeStream(reconnect=reconnect)
            starting = stream.start()
            factory = self.reactor.tcpClients[0][2]
            factory.clientConnectionFailed(self.reactor.connectors[0], Failure(ConnectionRefusedError()))
            failure(starting).trap(ConnectionRefusedError)
            self.reactor.advance(0)
            self.assertEqual(self.reactor.getDelayedCalls(), [])  # no retry scheduled

    def test_lost_without_reconnect_reports_disconnect(self) -> None:
        stream = self.makeStream()
        starting = stream.start()
        control, data = self.handshake(0)
        result(starting)
        data.lose(Failure(ConnectionLost("data gone")))
        self.assertEqual(len(self.disconnects), 1)
        self.assertTrue(control.transport.disconnecting)
        control.lose()
        self.assertEqual(len(self.disconnects), 1)
        self.assertFalse(stream.running)
        self.assertIsNone(result(stream.stop()))

    def test_reconnect_resumes_and_reports_lost_time(self) -> None:
        stream = self.makeStream(reconnect=True, retryPolicy=lambda attempt: 2.0)
        starting = stream.start()
        control, data = self.handshake(0)
        result(starting)
        data.protocol.dataReceived(b"".join(packetBytes(i, i) for i in range(5)))
        # The server goes away: control first, then its data connection.
        control.lose(Failure(ConnectionLost("server crashed")))
        self.assertTrue(data.transport.disconnecting)
        data.lose()
        self.assertFalse(stream.running)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.reactor.advance(1.9)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.reactor.advance(0.1)
        self.assertEqual(len(self.reactor.tcpClients), 3)
        control2, data2 = self.handshake(2, dataPort=50124)
        self.assertTrue(stream.running)
        # Ticks 5..9 were lost; the new connection counts from 0 again.
        data2.protocol.dataReceived(b"".join(packetBytes(i, i - 10) for i in range(10, 13)))
        self.assertEqual(len(self.reconnects), 1)
        self.assertAlmostEqual(self.reconnects[0], 5 * PERIOD)
        self.assertEqual(stream.ticks_lost, 5)
        self.assertEqual(stream.reconnections, 1)
        self.assertEqual(self.gaps, [])
        self.assertEqual(self.disconnects, [])
        self.assertEqual([p.packet_id for p in self.packets], [0, 1, 2, 3, 4, 10, 11, 12])
        self.stopAndClose(stream, control2, data2)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_a_silent_session_is_lost_and_made_again(self) -> None:
        """A server host or path that vanished sends no FIN: the data watchdog ends the session."""
        stream = self.makeStream(reconnect=True, retryPolicy=lambda attempt: 1.0, dataTimeout=2.0)
        starting = stream.start()
        control, data = self.handshake(0)
        result(starting)
        for tick in range(3):  # packets keep it alive, however long it streams
            data.protocol.dataReceived(packetBytes(tick, tick))
            self.reactor.advance(1.5)
        self.assertFalse(control.transport.disconnecting)
        self.reactor.advance(0.5)  # 2 s since the last packet
        self.assertTrue(control.transport.disconnecting and data.transport.disconnecting)
        control.lose()
        data.lose()
        self.assertEqual(stream.reconnections, 1)
        self.reactor.advance(1.0)
        control2, data2 = self.handshake(2, dataPort=50124)
        data2.protocol.dataReceived(packetBytes(200, 0))
        self.assertEqual(stream.ticks_lost, 197)
        self.assertEqual([p.packet_id for p in self.packets], [0, 1, 2, 200])
        self.stopAndClose(stream, control2, data2)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_a_silent_session_without_reconnect_is_reported_lost(self) -> None:
        stream = self.makeStream(dataTimeout=3.0)
        starting = stream.start()
        control, data = self.handshake(0)
        result(starting)
        self.reactor.advance(2.9)
        self.assertEqual(self.disconnects, [])
        self.reactor.advance(0.1)  # not a single packet since the start
        (lost,) = self.disconnects
        lost.trap(TiAConnectionLost)
        self.assertIn("no data for 3 s", lost.getErrorMessage())
        control.lose()
        data.lose()
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_no_data_watchdog_when_turned_off(self) -> None:
        stream = self.makeStream(dataTimeout=None)
        starting = stream.start()
        control, data = self.handshake(0)
        result(starting)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.reactor.advance(3600)
        self.assertTrue(stream.running)
        self.stopAndClose(stream, control, data)

    def test_failed_session_set_up_backs_off(self) -> None:
        delays: list[int] = []

        def policy(attempt: int) -> float:
            delays.append(attempt)
            return 1.0

        stream = self.makeStream(reconnect=True, retryPolicy=policy)
        result_ = stream.start()
        control, data = self.handshake(0)
        result(result_)
        control.lose(Failure(ConnectionLost()))
        data.lose()
        self.reactor.advance(1.0)
        second = MemoryConnection(self.reactor, 2)
        second.protocol.dataReceived(build_error("busy"))
        second.lose()
        self.reactor.advance(1.0)
        self.assertEqual(delays, [1, 2])  # the failed set-up counted as a failed attempt
        third = MemoryConnection(self.reactor, 3)
        stopping = stream.stop()
        self.assertTrue(third.transport.disconnecting)
        third.lose()
        self.assertIsNone(result(stopping))


# -- end to end against a fake server on 127.0.0.1 -----------------------------------


class FakeControlProtocol(Protocol):
    """The server side of the control connection, answering the SPEC's requests."""

    def __init__(self, server: FakeTiAServer | None) -> None:
        self.server = server
        self.parser = ControlParser()
        self.requests: list[tuple[str, str | None]] = []
        self.dataProtocol: FakeDataProtocol | None = None
        self.udpTarget: int | None = None
        self.started = False
        self.sent = 0

    @classmethod
    def standalone(cls) -> FakeControlProtocol:
        return cls(None)

    def connectionMade(self) -> None:
        if self.server is not None:
            self.server.track(self)

    def dataReceived(self, data: bytes) -> None:
        for message in self.parser.feed(data):
            self.requests.append((message.command, message.parameter))
            if self.server is not None:
                self.server.requests.append((message.command, message.parameter))
            assert self.transport is not None
            self.transport.write(self.answer(message))

    def answer(self, message: ControlMessage) -> bytes:
        command, parameter = message.command, message.parameter
        if command in (Command.CHECK_PROTOCOL_VERSION, Command.SET_CUSTOM_SIGNAL_INFO):
            return OK
        if command == Command.GET_METAINFO:
            return METAINFO_REPLY
        if command == Command.GET_SERVER_STATE_CONNECTION:
            port = 4242 if self.server is None else self.server.listenState()
            return build_message(Command.SERVER_STATE_CONNECTION_PORT, str(port))
        if self.server is None:
            return build_error()
        if command == Command.GET_DATA_CONNECTION and parameter == "TCP":
            port = self.server.listenData(self)
            return build_message(Command.DATA_CONNECTION_PORT, str(port))
        if command == Command.GET_DATA_CONNECTION and parameter == "UDP":
            self.udpTarget = freeUDPPort()
            return build_message(Command.DATA_CONNECTION_PORT, str(self.udpTarget))
        if command == Command.START_DATA_TRANSMISSION:
            self.started = True
            globalReactor.callLater(0, self.stream)
            return OK
        if command == Command.STOP_DATA_TRANSMISSION:
            self.started = False
            return OK
        return build_error("unknown command")

    def stream(self) -> None:
        """Send this session's packets, numbered by the server-wide tick counter."""
        assert self.server is not None
        if not self.started:
            return
        target = self.udpTarget
        data = self.dataProtocol
        if target is None and (data is None or data.transport is None):
            return  # Start came before the data connection: sent when it connects
        for _ in range(self.server.packetsPerSession):
            packet = packetBytes(self.server.tick, self.sent)
            if target is not None:
                assert self.server.udp.transport is not None
                self.server.udp.transport.write(packet, ("127.0.0.1", target))
            else:
                assert data is not None and data.transport is not None
                data.transport.write(packet)
            self.server.tick += 1
            self.sent += 1

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.server is not None:
            self.server.untrack(self)


class FakeDataProtocol(Protocol):
    def __init__(self, server: FakeTiAServer, control: FakeControlProtocol) -> None:
        self.server, self.control = server, control

    def connectionMade(self) -> None:
        self.server.track(self)
        self.control.dataProtocol = self
        self.control.stream()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.server.untrack(self)


class FakeStateProtocol(Protocol):
    def __init__(self, server: FakeTiAServer) -> None:
        self.server = server

    def connectionMade(self) -> None:
        self.server.track(self)
        assert self.transport is not None
        self.transport.write(SERVER_STATE_RUNNING)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.server.untrack(self)


def freeUDPPort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class FakeTiAServer:
    """A tiny TiA server on 127.0.0.1: one TCP data port per request, packets on Start."""

    def __init__(self, packetsPerSession: int = 5) -> None:
        self.packetsPerSession = packetsPerSession
        self.tick = 0
        self.requests: list[tuple[str, str | None]] = []
        self.listening: list[Any] = []
        self.connections: dict[Protocol, Deferred[None]] = {}
        self.udp = DatagramProtocol()
        self.controlPort = self.listen(lambda: FakeControlProtocol(self))
        udp = IReactorUDP(globalReactor).listenUDP(0, self.udp, interface="127.0.0.1", maxPacketSize=8192)
        self.listening.append(udp)

    def listen(self, build: Callable[[], Protocol]) -> IListeningPort:
        """A TCP port on 127.0.0.1 serving ``build()``-s, closed with the server."""
        listening = IReactorTCP(globalReactor).listenTCP(0, server_factory(build), interface="127.0.0.1")
        self.listening.append(listening)
        return listening

    @property
    def port(self) -> int:
        return port_number(self.controlPort)

    def listenData(self, control: FakeControlProtocol) -> int:
        return port_number(self.listen(lambda: FakeDataProtocol(self, control)))

    def listenState(self) -> int:
        return port_number(self.listen(lambda: FakeStateProtocol(self)))

    def track(self, protocol: Protocol) -> None:
        self.connections[protocol] = Deferred()

    def untrack(self, protocol: Protocol) -> None:
        self.connections.pop(protocol).callback(None)

    def dropAll(self) -> Deferred[Any]:
        """Abort every accepted connection, as a crashing server would."""
        closing = list(self.connections.values())
        for protocol in list(self.connections):
            cast(ITCPTransport, protocol.transport).abortConnection()
        return defer.gatherResults(closing)

    async def close(self) -> None:
        await self.dropAll()
        await defer.gatherResults(
            [defer.maybeDeferred(port.stopListening) for port in self.listening]
        )


class EndToEndTests(unittest.TestCase):
    timeout = 10

    def setUp(self) -> None:
        self.server = FakeTiAServer()
        self.addCleanup(self.server.close)
        self.packets: list[DataPacket] = []
        self.waiters: list[tuple[int, Deferred[None]]] = []

    def onPacket(self, packet: DataPacket) -> None:
        self.packets.append(packet)
        for count, waiter in list(self.waiters):
            if len(self.packets) >= count and not waiter.called:
                waiter.callback(None)

    def packetCount(self, count: int) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        if len(self.packets) >= count:
            waiter.callback(None)
        else:
            self.waiters.append((count, waiter))
        return waiter.addTimeout(5, globalReactor)

    async def test_connect_tia(self) -> None:
        control = await connectTiA(globalReactor, f"tcp:127.0.0.1:{self.server.port}")
        await control.checkProtocolVersion()
        metainfo = await control.getMetaInfo()
        self.assertEqual(metainfo.signal("eeg").num_channels, 3)
        with self.assertRaises(TiAServerError):
            await control.request("FooBar")
        await control.close()

    async def test_tcp_stream(self) -> None:
        states: list[str] = []
        stream = TiAStream(
            globalReactor,
            f"tcp:127.0.0.1:{self.server.port}",
            onPacket=self.onPacket,
            onServerState=states.append,
        )
        metainfo = await stream.start()
        self.assertEqual(metainfo.master_block_size, 10)
        await self.packetCount(5)
        await stream.stop()
        for number, packet in enumerate(self.packets):
            assertPacket(self, packet, number, number)
        self.assertEqual(states, ["ServerStateRunning"])
        self.assertEqual(
            self.server.requests,
            [
                ("CheckProtocolVersion", None),
                ("GetMetaInfo", None),
                ("GetServerStateConnection", None),
                ("GetDataConnection", "TCP"),
                ("StartDataTransmission", None),
                ("StopDataTransmission", None),
            ],
        )

    async def test_udp_stream(self) -> None:
        stream = TiAStream(
            globalReactor,
            f"tcp:127.0.0.1:{self.server.port}",
            transport="UDP",
            onPacket=self.onPacket,
            udpInterface="127.0.0.1",
        )
        await stream.start()
        await self.packetCount(5)
        await stream.stop()
        self.assertEqual([p.packet_id for p in self.packets], [0, 1, 2, 3, 4])
        assertPacket(self, self.packets[4], 4, 4)

    async def test_reconnect_after_server_drop(self) -> None:
        lost: list[float] = []
        stream = TiAStream(
            globalReactor,
            f"tcp:127.0.0.1:{self.server.port}",
            onPacket=self.onPacket,
            onReconnect=lost.append,
            reconnect=True,
            retryPolicy=lambda attempt: 0.05,
        )
        await stream.start()
        await self.packetCount(5)
        await self.server.dropAll()
        self.server.tick += 7  # ticks the client misses while away
        await self.packetCount(10)
        await stream.stop()
        self.assertEqual(
            [p.packet_id for p in self.packets], [0, 1, 2, 3, 4, 12, 13, 14, 15, 16]
        )
        self.assertEqual(len(lost), 1)
        self.assertAlmostEqual(lost[0], 7 * PERIOD)
        self.assertEqual(stream.reconnections, 1)


def test_the_tls_name_comes_from_the_description_not_from_endpoint_internals() -> None:
    import pytest
    from twisted.internet.endpoints import TCP4ClientEndpoint
    from twisted.internet.testing import MemoryReactor

    from tia.client.control import description_host, tls_name
    from tia.client.tls import TLSSettings

    assert description_host("tcp:127.0.0.1:9000") == "127.0.0.1"
    assert description_host("tcp:port=9000:host=eeg-server") == "eeg-server"
    assert description_host(r"tcp6:\:\:1:9000") == "::1"
    assert description_host("unix:/run/tia.sock") is None
    assert tls_name("tcp:eeg-server:9000", TLSSettings()) == "eeg-server"
    assert tls_name("tcp:10.0.0.5:9000", TLSSettings(server_name="eeg-server")) == "eeg-server"
    endpoint = TCP4ClientEndpoint(MemoryReactor(), "10.0.0.5", 9000)
    with pytest.raises(ValueError, match="server_name"):
        tls_name(endpoint, TLSSettings())  # an endpoint object does not say its host publicly
    assert tls_name(endpoint, TLSSettings(server_name="eeg-server")) == "eeg-server"
