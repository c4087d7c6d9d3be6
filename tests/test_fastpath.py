"""The TCP fast path (tia.server.fastpath): the private Twisted fields it reads, and every branch.

If a Twisted release renames or retypes the buffer fields of ``tcp.Connection``,
``test_twisted_tcp_connections_have_the_fields_the_fast_path_reads`` fails and
names them: the daemon still streams correctly (through ``transport.write``),
only slower, so this test is where the change must be noticed.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
from support import SocketTestCase
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.testing import StringTransport

from tia.server.fastpath import SMALL_PACKET_BYTES, TWISTED_FIELDS, DirectWriter, missing_fields

HEADER, BODY = b"H" * 33, b"B" * 100


class _Accepted(Protocol):
    def __init__(self, accepted: Deferred[Protocol]) -> None:
        self.accepted = accepted

    def connectionMade(self) -> None:
        self.accepted.callback(self)


class _AcceptOnce(ServerFactory):
    def __init__(self) -> None:
        self.accepted: Deferred[Protocol] = Deferred()

    def buildProtocol(self, addr: object) -> Protocol:
        return _Accepted(self.accepted)


class RealConnectionTests(SocketTestCase):
    @inlineCallbacks
    def test_twisted_tcp_connections_have_the_fields_the_fast_path_reads(self) -> Any:
        factory = _AcceptOnce()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", address.port), Protocol())
        self.addCleanup(client.transport.loseConnection)
        server = yield factory.accepted
        self.addCleanup(server.transport.loseConnection)
        missing = missing_fields(server.transport)
        assert missing == [], (
            f"Twisted's tcp.Connection no longer has {missing} as tia.server.fastpath expects "
            f"({TWISTED_FIELDS}): update the fast path to this Twisted"
        )
        writer = DirectWriter.for_transport(server.transport)
        assert writer is not None
        writer.write(HEADER, BODY)  # through the kernel, Twisted's buffer untouched
        assert server.transport.dataBuffer == b"" and server.transport._tempDataLen == 0


def test_other_transports_get_no_direct_writer() -> None:
    assert DirectWriter.for_transport(StringTransport()) is None
    assert missing_fields(StringTransport())  # it lacks them


class FakeSocket:
    def __init__(self, outcome: int | OSError) -> None:
        self.outcome = outcome
        self.calls: list[tuple[str, object]] = []

    def _result(self, size: int) -> int:
        if isinstance(self.outcome, OSError):
            raise self.outcome
        return min(self.outcome, size)

    def send(self, data: bytes) -> int:
        self.calls.append(("send", data))
        return self._result(len(data))

    def sendmsg(self, buffers: tuple[bytes, bytes]) -> int:
        self.calls.append(("sendmsg", buffers))
        return self._result(sum(map(len, buffers)))


class FakeConnection:
    """What DirectWriter reads of a tcp.Connection, and what it hands to Twisted."""

    def __init__(self, sock: FakeSocket, buffered: bytes = b"", disconnecting: bool = False) -> None:
        self.socket = sock
        self._tempDataLen = 0
        self.offset = 0
        self.dataBuffer = buffered
        self.connected = 1
        self.disconnecting = disconnecting
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        assert isinstance(data, bytes)  # Twisted's write takes bytes only
        self.written.append(data)

    def writeSequence(self, data: tuple[bytes, ...]) -> None:
        self.written.append(b"".join(data))


def writer_for(connection: FakeConnection) -> DirectWriter:
    return DirectWriter(connection)  # type: ignore[arg-type]  # a fake connection: the socket and buffer it reads


def test_an_empty_buffer_sends_header_and_body_in_one_send() -> None:
    connection = FakeConnection(FakeSocket(10_000))
    writer_for(connection).write(HEADER, BODY)
    assert connection.socket.calls == [("send", HEADER + BODY)]
    assert connection.written == []


def test_a_large_packet_goes_out_vectored_without_a_copy() -> None:
    body = b"B" * (SMALL_PACKET_BYTES + 1)
    connection = FakeConnection(FakeSocket(1 << 30))
    writer_for(connection).write(HEADER, body)
    assert connection.socket.calls == [("sendmsg", (HEADER, body))]


@pytest.mark.parametrize("state", ["buffered", "temp", "disconnecting", "closed"])
def test_whatever_twisted_holds_or_closes_keeps_the_packet_in_twisted(state: str) -> None:
    connection = FakeConnection(FakeSocket(10_000), buffered=b"x" if state == "buffered" else b"",
                                disconnecting=state == "disconnecting")
    if state == "temp":
        connection._tempDataLen = 5
    if state == "closed":
        connection.connected = 0
    writer_for(connection).write(HEADER, BODY)
    assert connection.socket.calls == []
    assert connection.written == [HEADER + BODY]  # in order behind what Twisted holds


def test_a_partial_send_leaves_exactly_the_rest_to_twisted() -> None:
    connection = FakeConnection(FakeSocket(10))
    writer_for(connection).write(HEADER, BODY)
    assert connection.written == [(HEADER + BODY)[10:]]


@pytest.mark.parametrize("code", [errno.EAGAIN, errno.ENOBUFS, errno.EINTR])
def test_a_full_kernel_buffer_leaves_the_whole_packet_to_twisted(code: int) -> None:
    connection = FakeConnection(FakeSocket(OSError(code, "busy")))
    writer_for(connection).write(HEADER, BODY)
    assert connection.written == [HEADER + BODY]


@pytest.mark.parametrize("code", [errno.EPIPE, errno.ECONNRESET])
def test_a_broken_connection_is_left_for_twisted_to_report(code: int) -> None:
    connection = FakeConnection(FakeSocket(OSError(code, "gone")))
    writer_for(connection).write(HEADER, BODY)
    assert connection.written == [HEADER + BODY]  # Twisted meets the error and loses the connection

