"""The blocking, pytia-compatible client against scripted fake servers.

Two kinds of peer: a real server on 127.0.0.1 (plain sockets and a thread, no
Twisted) for the bytes on the wire, timeouts and UDP; and a mock socket whose
``recv`` hands out a script chunk by chunk (down to one byte), which checks
reassembly at every byte boundary without waiting on the network.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest

import tia
import tia.client.sockets
from tia.client import blocking
from tia.client.blocking import TiAClient, TiAError, TiAPacket
from tia.protocol.control import (
    GET_RECORDING_STATE,
    RECORDING_STATE,
    START_RECORDING,
    STOP_RECORDING,
    Command,
    build_error,
    build_message,
)
from tia.protocol.metainfo import MetaInfo, SignalInfo, Subject
from tia.protocol.packet import decode_packet, encode_packet
from tia.protocol.signals import by_name

EEG, BP, BUTTON = 0x1, 0x20, 0x40

OK = build_message(Command.OK)


def port_reply(port: int) -> bytes:
    return build_message(Command.DATA_CONNECTION_PORT, str(port))


def request(command: str, parameter: str | None = None) -> bytes:
    return build_message(command, parameter)


def make_packets(count: int, first: int = 0) -> list[bytes]:
    """Packets with a varying set of signals: eeg 3x4 and bp 1x2 always, button sometimes."""
    packets = []
    for n in range(first, first + count):
        blocks: list[tuple[int, np.ndarray]] = [
            (EEG, np.arange(12, dtype=np.float32).reshape(3, 4) + 100 * n),
            (BP, np.array([[n + 0.5, -n - 0.25]], dtype=np.float32)),
        ]
        if n % 2:
            blocks.append((BUTTON, np.array([[1.0], [0.0]], dtype=np.float32)))
        packets.append(encode_packet(1000 + n, n, 4000 * n, blocks))
    return packets


def check_packet(packet: TiAPacket, n: int) -> None:
    """``packet`` is make_packets()'s number ``n``, in the seed's shape."""
    assert packet.packet_id == 1000 + n
    assert packet.packet_number == n
    assert packet.timestamp == 4000 * n
    expect_flags = EEG | BP | (BUTTON if n % 2 else 0)
    assert packet.flags == expect_flags
    assert packet.types == ["eeg", "bp", "button"][: 3 if n % 2 else 2]
    assert packet.channels == [3, 1, 2][: len(packet.types)]
    assert packet.blocksizes == [4, 2, 1][: len(packet.types)]
    assert packet.signals[0].dtype == np.float32 and packet.signals[0].ndim == 1
    assert packet.signals[0].tolist() == [float(x + 100 * n) for x in range(12)]
    assert packet.signals[1].tolist() == [n + 0.5, -n - 0.25]
    assert packet.arrays[0].shape == (3, 4)
    assert np.shares_memory(packet.arrays[0], packet.signals[0])


def big_metainfo() -> MetaInfo:
    eeg = SignalInfo(
        by_name("eeg"), 512.0, 8, tuple(f"EEG-electrode-{i:03d}" for i in range(1, 129))
    )
    emg = SignalInfo(by_name("emg"), 512.0, 8, tuple(f"EMG{i}" for i in range(1, 33)))
    return MetaInfo(512.0, 8, (emg, eeg), Subject("S01", "Ada", "Lovelace"))


# -- mock sockets -------------------------------------------------------------


class MockSocket:
    """Hands out scripted bytes chunk by chunk; answers each sendall from a reply queue."""

    def __init__(
        self,
        inbound: Sequence[bytes] = (),
        replies: Sequence[bytes] = (),
        chunk: int = 1,
        eof: bool = False,
    ) -> None:
        self.inbound: deque[bytes] = deque(c for c in inbound if c)
        self.replies = deque(replies)
        self.chunk = chunk
        self.eof = eof
        self.sent: list[bytes] = []
        self.timeout: float | None = None
        self.closed = False
        self.recv_calls = 0

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))
        if self.replies:
            reply = self.replies.popleft()
            self.inbound.extend(
                reply[i : i + self.chunk] for i in range(0, len(reply), self.chunk)
            )

    def recv(self, size: int) -> bytes:
        self.recv_calls += 1
        if self.inbound:
            head = self.inbound.popleft()
            if len(head) > size:
                self.inbound.appendleft(head[size:])
                head = head[:size]
            return head
        if self.timeout == 0.0:
            raise BlockingIOError
        if self.eof:
            return b""
        raise TimeoutError

    def close(self) -> None:
        self.closed = True


def one_byte_chunks(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def mock_client(
    monkeypatch: pytest.MonkeyPatch, *sockets: MockSocket, timeout: float = 0.2
) -> TiAClient:
    """A connected client whose control (and then data) connections are the mocks."""
    queue = list(sockets)

    def fake_open(host: str, port: int, timeout: float | None) -> MockSocket:
        return queue.pop(0)

    monkeypatch.setattr(tia.client.sockets, "open_tcp", fake_open)
    client = TiAClient("tia.invalid", 9000, timeout=timeout)
    assert client.connect()
    return client


def mock_streaming_client(
    monkeypatch: pytest.MonkeyPatch, data: MockSocket
) -> TiAClient:
    ctrl = MockSocket(replies=[port_reply(40000), OK, OK], chunk=1)
    client = mock_client(monkeypatch, ctrl, data)
    assert client.cmd_get_data_connection_tcp() == (True, 40000)
    assert client.start_streaming_data_tcp("tia.invalid", 40000)
    return client


# -- a real fake server -------------------------------------------------------


class Session:
    """The server side of one control connection, driven by a test scenario."""

    def __init__(self, server: FakeServer, conn: socket.socket) -> None:
        self.server = server
        self.conn = conn
        self._buffer = b""

    def request(self) -> bytes:
        """Read one content-less request (the client never sends content)."""
        while b"\n\n" not in self._buffer:
            chunk = self.conn.recv(4096)
            if not chunk:
                raise AssertionError(f"client closed; partial request {self._buffer!r}")
            self._buffer += chunk
        end = self._buffer.index(b"\n\n") + 2
        data, self._buffer = self._buffer[:end], self._buffer[end:]
        self.server.requests.append(data)
        return data

    def reply(self, data: bytes, step: int = 0, pause: float = 0.0) -> None:
        """Send ``data``, in pieces of ``step`` bytes with pauses if asked."""
        if not step:
            self.conn.sendall(data)
            return
        for i in range(0, len(data), step):
            self.conn.sendall(data[i : i + step])
            time.sleep(pause)  # the pace under test: each piece a read of its own

    def expect(self, expected: bytes, reply: bytes, step: int = 0, pause: float = 0.0) -> None:
        got = self.request()
        assert got == expected, f"expected {expected!r}, got {got!r}"
        self.reply(reply, step, pause)

    def wait_closed(self) -> None:
        """Wait for the client to close the control connection."""
        while self.conn.recv(4096):
            pass

    def tcp_data(self) -> tuple[socket.socket, int]:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(3)
        return listener, listener.getsockname()[1]


Scenario = Callable[[Session], None]


class FakeServer:
    """Accepts one control connection and runs ``scenario`` on it in a thread."""

    def __init__(self, scenario: Scenario) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(3)
        self.port: int = self.listener.getsockname()[1]
        self.requests: list[bytes] = []
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(scenario,), daemon=True)
        self._thread.start()

    def _run(self, scenario: Scenario) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(3)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                scenario(Session(self, conn))
        except BaseException as error:
            self.error = error
        finally:
            self.done.set()

    def close(self) -> None:
        self._thread.join(5)
        self.listener.close()
        if self.error is not None:
            raise self.error


@pytest.fixture
def serve() -> Iterator[Callable[[Scenario], FakeServer]]:
    servers: list[FakeServer] = []

    def start(scenario: Scenario) -> FakeServer:
        server = FakeServer(scenario)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def collect(client: TiAClient, count: int) -> list[TiAPacket]:
    packets: list[TiAPacket] = []
    while len(packets) < count:
        batch = client.get_data()
        assert batch, "data ended early"
        packets.extend(batch)
    return packets


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# -- control requests on a real socket -----------------------------------------


def test_exact_request_bytes_of_every_command(
    serve: Callable[[Scenario], FakeServer],
) -> None:
    metainfo = big_metainfo().to_xml()

    def scenario(session: Session) -> None:
        session.expect(b"TiA 1.0\nCheckProtocolVersion\n\n", OK)
        session.expect(b"TiA 1.0\nGetMetaInfo\n\n", build_message("MetaInfo", content=metainfo))
        session.expect(
            b"TiA 1.0\nGetServerStateConnection\n\n",
            b"TiA 1.0\nServerStateConnectionPort:38431\n\n",
        )
        session.expect(b"TiA 1.0\nGetDataConnection:UDP\n\n", port_reply(43034))
        listener, port = session.tcp_data()
        with listener:
            session.expect(b"TiA 1.0\nGetDataConnection:TCP\n\n", port_reply(port))
            session.expect(b"TiA 1.0\nStartDataTransmission\n\n", OK)
            data, _ = listener.accept()
            with data:
                session.expect(b"TiA 1.0\nStopDataTransmission\n\n", OK)
                session.wait_closed()

    server = serve(scenario)
    client = TiAClient("127.0.0.1", server.port, timeout=3)
    assert client.connect()
    assert client.cmd_check_protocol_version() is True
    assert client.cmd_get_metainfo() is True
    assert client.cmd_get_server_state_connection() == (True, 38431)
    assert client.cmd_get_data_connection_udp() == (True, 43034)
    status, port = client.cmd_get_data_connection_tcp()
    assert status
    assert client.start_streaming_data_tcp("127.0.0.1", port) is True
    assert client.stop_streaming_data() is True
    assert client.data_socket is None
    assert client.disconnect() is True
    assert server.done.wait(3)
    assert client.last_error is None


def test_replies_split_into_single_bytes(serve: Callable[[Scenario], FakeServer]) -> None:
    def scenario(session: Session) -> None:
        session.expect(request(Command.CHECK_PROTOCOL_VERSION), OK, step=1, pause=0.001)
        session.expect(
            request(Command.GET_DATA_CONNECTION, "TCP"), port_reply(50123), step=1, pause=0.001
        )
        session.expect(
            request(Command.GET_DATA_CONNECTION, "UDP"), build_error("no UDP"), step=1, pause=0.001
        )
        session.wait_closed()

    server = serve(scenario)
    with TiAClient("127.0.0.1", server.port, timeout=3) as client:
        assert client.cmd_check_protocol_version()
        assert client.cmd_get_data_connection_tcp() == (True, 50123)
        assert client.cmd_get_data_connection_udp() == (False, 0)
        assert client.last_error == "no UDP"


def test_big_metainfo_reply_split_across_reads(serve: Callable[[Scenario], FakeServer]) -> None:
    expected = big_metainfo()
    content = expected.to_xml()
    assert len(content) > 4096

    def scenario(session: Session) -> None:
        reply = build_message(Command.METAINFO, content=content)
        session.expect(request(Command.GET_METAINFO), reply, step=997, pause=0.002)
        # A second time in one write: larger than the seed's single 4096-byte recv.
        session.expect(request(Command.GET_METAINFO), reply)
        session.wait_closed()

    server = serve(scenario)
    with TiAClient("127.0.0.1", server.port, timeout=3) as client:
        assert client.metainfo is None
        for _ in range(2):
            assert client.cmd_get_metainfo()
            assert client.metainfo == expected
        assert client.metainfo is not None
        assert [s.type.name for s in client.metainfo.signals] == ["eeg", "emg"]
        assert client.metainfo.signals[0].labels[127] == "EEG-electrode-128"
        assert client.metainfo.subject.surname == "Lovelace"


def test_error_reply_leaves_connection_usable(serve: Callable[[Scenario], FakeServer]) -> None:
    def scenario(session: Session) -> None:
        session.expect(request(Command.START_DATA_TRANSMISSION), build_error("no data connection"))
        session.expect(request(Command.CHECK_PROTOCOL_VERSION), OK)
        session.wait_closed()

    server = serve(scenario)
    with TiAClient("127.0.0.1", server.port, timeout=3) as client:
        assert client.start_streaming_data_tcp("127.0.0.1", 1) is False
        assert client.last_error == "no data connection"
        assert client.data_socket is None
        assert client.cmd_check_protocol_version() is True
        assert client.last_error is None


# -- control requests on a mock socket, one byte per recv ----------------------

ERROR_FORMS = [
    pytest.param(b"TiA 1.0\nError\n\n", "Error", id="bare"),
    pytest.param(b"TiA 1.0\nError -- Target and remote subnet do not match!\n\n",
                 "Target and remote subnet do not match!", id="text"),
    pytest.param(
        build_message(Command.ERROR, content=b'<tiaError version="1.0" description="busy"/>'),
        "busy",
        id="xml",
    ),
    pytest.param(b"TiA 1.0\nValidationError\n\n", "ValidationError", id="validation"),
]


@pytest.mark.parametrize(("reply", "text"), ERROR_FORMS)
def test_error_replies_return_false_and_keep_the_text(
    monkeypatch: pytest.MonkeyPatch, reply: bytes, text: str
) -> None:
    ctrl = MockSocket(replies=[reply] * 7, chunk=1)
    client = mock_client(monkeypatch, ctrl)
    calls: list[Callable[[], object]] = [
        client.cmd_check_protocol_version,
        client.cmd_get_metainfo,
        client.cmd_get_data_connection_tcp,
        client.cmd_get_data_connection_udp,
        client.cmd_get_server_state_connection,
        lambda: client.start_streaming_data_tcp("tia.invalid", 1),
        client.stop_streaming_data,
    ]
    expected: list[object] = [False, False, (False, 0), (False, 0), (False, 0), False, False]
    for call, result in zip(calls, expected, strict=True):
        client.last_error = None
        assert call() == result
        assert client.last_error == text
    assert client.metainfo is None
    assert client.data_socket is None
    still_open: object = client.ctrl_socket
    assert still_open is ctrl


def test_every_reply_reassembled_from_single_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    metainfo = big_metainfo()
    ctrl = MockSocket(
        replies=[
            OK,
            build_message(Command.METAINFO, content=metainfo.to_xml()),
            b"TiA 1.0\r\nDataConnectionPort: 43033 \r\n\r\n",
            b"TiA 1.0\nServerStateConnectionPort:38431\n\n",
        ],
        chunk=1,
    )
    client = mock_client(monkeypatch, ctrl)
    assert client.cmd_check_protocol_version()
    assert client.cmd_get_metainfo()
    assert client.metainfo == metainfo
    assert client.cmd_get_data_connection_tcp() == (True, 43033)
    assert client.cmd_get_server_state_connection() == (True, 38431)
    assert ctrl.sent == [
        b"TiA 1.0\nCheckProtocolVersion\n\n",
        b"TiA 1.0\nGetMetaInfo\n\n",
        b"TiA 1.0\nGetDataConnection:TCP\n\n",
        b"TiA 1.0\nGetServerStateConnection\n\n",
    ]
    assert ctrl.recv_calls > len(metainfo.to_xml())


@pytest.mark.parametrize(
    ("reply", "call", "message"),
    [
        (b"TiA 2.0\nOK\n\n", "cmd_check_protocol_version", "version"),
        (OK, "cmd_get_data_connection_tcp", "expected 'DataConnectionPort'"),
        (port_reply(0), "cmd_get_data_connection_tcp", "invalid port"),
        (b"TiA 1.0\nDataConnectionPort:70000\n\n", "cmd_get_data_connection_udp", "invalid port"),
        (b"TiA 1.0\nDataConnectionPort\n\n", "cmd_get_data_connection_tcp", "invalid port"),
        (OK, "cmd_get_metainfo", "expected 'MetaInfo'"),
        (build_message("MetaInfo", content=b"<nope/>"), "cmd_get_metainfo", "invalid metainfo"),
        (port_reply(1), "cmd_check_protocol_version", "expected 'OK'"),
        (b"TiA 1.0\nOK\nX-Whatever:1\n\n", "cmd_check_protocol_version", "header"),
    ],
)
def test_protocol_violations_raise(
    monkeypatch: pytest.MonkeyPatch, reply: bytes, call: str, message: str
) -> None:
    client = mock_client(monkeypatch, MockSocket(replies=[reply], chunk=3))
    with pytest.raises(TiAError, match=message):
        getattr(client, call)()


def test_control_connection_closed_by_server_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    client = mock_client(monkeypatch, MockSocket(replies=[b"TiA 1.0\nO"], eof=True))
    with pytest.raises(TiAError, match="closed the control connection"):
        client.cmd_check_protocol_version()
    assert client.ctrl_socket is None
    assert client.cmd_check_protocol_version() is False
    assert client.last_error == "not connected"


def test_not_connected_returns_false() -> None:
    client = TiAClient("127.0.0.1", 9)
    assert client.cmd_check_protocol_version() is False
    assert client.last_error == "not connected"
    assert client.cmd_get_data_connection_tcp() == (False, 0)
    assert client.start_streaming_data_udp("127.0.0.1", 1) is False
    assert client.stop_streaming_data() is False
    assert client.get_data() == []
    assert client.disconnect() is False


def test_connect_refused_returns_false_and_context_manager_raises() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = TiAClient("127.0.0.1", port, timeout=2)
    assert client.connect() is False
    assert client.last_error is not None and "cannot connect" in client.last_error
    with pytest.raises(TiAError, match="cannot connect"), TiAClient("127.0.0.1", port, timeout=2):
        pass


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TiAClient("127.0.0.1", 9000, timeout=0)


# -- timeouts --------------------------------------------------------------------


def test_reply_timeout_raises_and_late_reply_is_skipped(
    serve: Callable[[Scenario], FakeServer],
) -> None:
    def scenario(session: Session) -> None:
        assert session.request() == request(Command.GET_DATA_CONNECTION, "TCP")
        # No answer until the client has given up and asks something else.
        assert session.request() == request(Command.CHECK_PROTOCOL_VERSION)
        session.reply(port_reply(41000) + OK)
        session.wait_closed()

    server = serve(scenario)
    with TiAClient("127.0.0.1", server.port, timeout=0.2) as client:
        started = time.monotonic()
        with pytest.raises(TiAError, match="no reply to GetDataConnection"):
            client.cmd_get_data_connection_tcp()
        assert 0.1 < time.monotonic() - started < 3
        client.timeout = 3
        assert client.cmd_check_protocol_version() is True


def test_data_timeout_raises(serve: Callable[[Scenario], FakeServer]) -> None:
    def scenario(session: Session) -> None:
        listener, port = session.tcp_data()
        with listener:
            session.expect(request(Command.GET_DATA_CONNECTION, "TCP"), port_reply(port))
            session.expect(request(Command.START_DATA_TRANSMISSION), OK)
            data, _ = listener.accept()
            with data:
                data.sendall(make_packets(1)[0][:20])
                session.expect(request(Command.STOP_DATA_TRANSMISSION), OK)
                session.wait_closed()

    server = serve(scenario)
    with TiAClient("127.0.0.1", server.port, timeout=3) as client:
        _, port = client.cmd_get_data_connection_tcp()
        assert client.start_streaming_data_tcp("127.0.0.1", port)
        started = time.monotonic()
        with pytest.raises(TiAError, match="no data packet"):
            client.get_data(timeout=0.2)
        assert 0.1 < time.monotonic() - started < 3


# -- TCP data --------------------------------------------------------------------


def test_packets_sent_one_byte_at_a_time(serve: Callable[[Scenario], FakeServer]) -> None:
    stream = b"".join(make_packets(3))

    def scenario(session: Session) -> None:
        listener, port = session.tcp_data()
        with listener:
            session.expect(request(Command.GET_DATA_CONNECTION, "TCP"), port_reply(port))
            session.expect(request(Command.START_DATA_TRANSMISSION), OK)
            data, _ = listener.accept()
            with data:
                data.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for i in range(len(stream)):
                    data.sendall(stream[i : i + 1])
                    time.sleep(0.0003)  # the pace under test: each byte a read of its own
                session.expect(request(Command.STOP_DATA_TRANSMISSION), OK)
                session.wait_closed()

    server = serve(scenario)
    with TiAClient("127.0.0.1", server.port, timeout=3) as client:
        status, port = client.cmd_get_data_connection_tcp()
        assert status and client.start_streaming_data_tcp("127.0.0.1", port)
        packets = collect(client, 3)
        assert len(packets) == 3
        for n, packet in enumerate(packets):
            check_packet(packet, n)
        assert client.stop_streaming_data()


def test_stream_reassembled_at_every_split_point(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = b"".join(make_packets(3))
    for cut in range(1, len(stream)):
        data = MockSocket(inbound=[stream[:cut], stream[cut:]], eof=True)
        client = mock_streaming_client(monkeypatch, data)
        packets = list(client.packets())
        assert [p.packet_number for p in packets] == [0, 1, 2], cut
    check_packet(packets[1], 1)


def test_stream_reassembled_from_single_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = b"".join(make_packets(4))
    data = MockSocket(inbound=one_byte_chunks(stream), eof=True)
    client = mock_streaming_client(monkeypatch, data)
    packets = client.get_data()
    # Everything was available, so one call drains all four.
    assert [p.packet_number for p in packets] == [0, 1, 2, 3]
    for n, packet in enumerate(packets):
        check_packet(packet, n)
    assert client.get_data() == []


def test_several_packets_per_read_are_all_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    packets = make_packets(6)
    first = b"".join(packets[:5]) + packets[5][:10]
    data = MockSocket(inbound=[first, packets[5][10:]], chunk=1 << 16)
    client = mock_streaming_client(monkeypatch, data)
    batch = client.get_data()
    assert [p.packet_number for p in batch] == [0, 1, 2, 3, 4, 5]
    assert data.recv_calls == 3  # two reads, then the drain found nothing more
    with pytest.raises(TiAError, match="no data packet"):
        client.get_data()


def test_get_data_blocks_until_a_whole_packet(monkeypatch: pytest.MonkeyPatch) -> None:
    packet = make_packets(1)[0]
    data = MockSocket(inbound=one_byte_chunks(packet[:-1]))
    client = mock_streaming_client(monkeypatch, data)
    with pytest.raises(TiAError, match="no data packet"):
        client.get_data()
    data.inbound.append(packet[-1:])
    [result] = client.get_data()
    check_packet(result, 0)


def test_malformed_packet_drops_the_data_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad = make_packets(2)
    bad = b"\x04" + bad[1:]
    data = MockSocket(inbound=[good, bad], chunk=1 << 16)
    client = mock_streaming_client(monkeypatch, data)
    assert [p.packet_number for p in client.get_data()] == [0]
    with pytest.raises(TiAError, match="packet version 4"):
        client.get_data()
    with pytest.raises(TiAError, match="packet version 4"):
        client.get_data()
    assert data.closed


def test_valid_packets_before_a_malformed_one_in_the_same_read_are_delivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second, bad = make_packets(3)
    bad = b"\x04" + bad[1:]
    data = MockSocket(inbound=[first + second + bad], chunk=1 << 16)
    client = mock_streaming_client(monkeypatch, data)
    assert [p.packet_number for p in client.get_data()] == [0, 1]
    with pytest.raises(TiAError, match="packet version 4"):
        client.get_data()
    assert data.closed


def test_server_closing_inside_a_packet_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    data = MockSocket(inbound=[make_packets(1)[0][:40]], eof=True)
    client = mock_streaming_client(monkeypatch, data)
    with pytest.raises(TiAError, match="inside a packet"):
        client.get_data()


def test_packets_iteration_until_the_server_closes(
    serve: Callable[[Scenario], FakeServer],
) -> None:
    def scenario(session: Session) -> None:
        listener, port = session.tcp_data()
        with listener:
            session.expect(request(Command.GET_DATA_CONNECTION, "TCP"), port_reply(port))
            session.expect(request(Command.START_DATA_TRANSMISSION), OK)
            data, _ = listener.accept()
            with data:
                for packet in make_packets(5):
                    data.sendall(packet)
        session.expect(request(Command.STOP_DATA_TRANSMISSION), OK)
        session.wait_closed()

    server = serve(scenario)
    with TiAClient("127.0.0.1", server.port, timeout=3) as client:
        _, port = client.cmd_get_data_connection_tcp()
        assert client.start_streaming_data_tcp("127.0.0.1", port)
        received = list(client.packets())
        assert [p.packet_number for p in received] == [0, 1, 2, 3, 4]
        check_packet(received[3], 3)
        assert client.get_data() == []
    assert server.requests[-1] == request(Command.STOP_DATA_TRANSMISSION)


def test_context_manager_stops_and_disconnects_on_error(
    serve: Callable[[Scenario], FakeServer],
) -> None:
    def scenario(session: Session) -> None:
        listener, port = session.tcp_data()
        with listener:
            session.expect(request(Command.GET_DATA_CONNECTION, "TCP"), port_reply(port))
            session.expect(request(Command.START_DATA_TRANSMISSION), OK)
            data, _ = listener.accept()
            with data:
                data.sendall(make_packets(1)[0])
                session.expect(request(Command.STOP_DATA_TRANSMISSION), OK)
                session.wait_closed()

    server = serve(scenario)
    client = TiAClient("127.0.0.1", server.port, timeout=3)
    with pytest.raises(KeyError), client:
        _, port = client.cmd_get_data_connection_tcp()
        assert client.start_streaming_data_tcp("127.0.0.1", port)
        check_packet(client.get_data()[0], 0)
        raise KeyError("user code failed")
    assert client.ctrl_socket is None and client.data_socket is None
    assert server.done.wait(3)
    assert server.requests[-1] == request(Command.STOP_DATA_TRANSMISSION)


# -- UDP data --------------------------------------------------------------------


def test_udp_datagrams_to_the_bound_port(serve: Callable[[Scenario], FakeServer]) -> None:
    udp_port = free_udp_port()
    packets = make_packets(4)

    def scenario(session: Session) -> None:
        session.expect(request(Command.GET_DATA_CONNECTION, "UDP"), port_reply(udp_port))
        session.expect(request(Command.START_DATA_TRANSMISSION), OK)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for packet in packets[:3]:
                sender.sendto(packet, ("127.0.0.1", udp_port))
            garbage = b"\x03garbage that is no packet at all, not even close"
            sender.sendto(garbage, ("127.0.0.1", udp_port))
            sender.sendto(packets[3], ("127.0.0.1", udp_port))
        session.expect(request(Command.STOP_DATA_TRANSMISSION), OK)
        session.wait_closed()

    server = serve(scenario)
    with TiAClient("127.0.0.1", server.port, timeout=3) as client:
        status, port = client.cmd_get_data_connection_udp()
        assert (status, port) == (True, udp_port)
        assert client.start_streaming_data_udp("127.0.0.1", port)
        assert client.data_socket is not None
        assert client.data_socket.type == socket.SOCK_DGRAM
        received = collect(client, 3)
        assert [p.packet_number for p in received] == [0, 1, 2]
        check_packet(received[2], 2)
        with pytest.raises(TiAError, match="malformed data datagram"):
            client.get_data()
        [last] = client.get_data()
        check_packet(last, 3)
        assert client.stop_streaming_data()
        assert client.data_socket is None


def test_udp_late_and_repeated_datagrams_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    packets = make_packets(6)
    client = mock_client(monkeypatch, MockSocket(replies=[OK], chunk=1 << 16))
    port = free_udp_port()
    assert client.start_streaming_data_udp("127.0.0.1", port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for n in (0, 2, 1, 2, 3, 5):  # 1 late, 2 again, 4 lost
            sender.sendto(packets[n], ("127.0.0.1", port))
    received = collect(client, 5)
    assert [p.packet_number for p in received] == [0, 2, 1, 3, 5]  # the repeat is dropped
    check_packet(received[2], 1)
    sequence = client.sequence
    assert (sequence.received, sequence.gaps, sequence.lost, sequence.reordered, sequence.duplicates) == (
        5, 2, 1, 1, 1
    )
    assert sequence.describe() == "5 packets, 2 gaps (1 lost), 1 late, 1 repeated"


def test_repeated_numbers_on_tcp_are_dropped_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    packets = make_packets(4)
    data = MockSocket(inbound=[packets[0], packets[1], packets[1], packets[3]], chunk=1 << 16)
    client = mock_streaming_client(monkeypatch, data)
    assert [p.packet_number for p in collect(client, 3)] == [0, 1, 3]
    assert (client.sequence.gaps, client.sequence.lost, client.sequence.duplicates) == (1, 1, 1)


def test_udp_start_refused_closes_the_socket(serve: Callable[[Scenario], FakeServer]) -> None:
    udp_port = free_udp_port()

    def scenario(session: Session) -> None:
        session.expect(request(Command.START_DATA_TRANSMISSION), build_error("not now"))
        session.wait_closed()

    server = serve(scenario)
    with TiAClient("127.0.0.1", server.port, timeout=3) as client:
        assert client.start_streaming_data_udp("127.0.0.1", udp_port) is False
        assert client.last_error == "not now"
        assert client.data_socket is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("", udp_port))  # the port was released


# -- TiAPacket against the seed ----------------------------------------------------


def seed_packet(raw: bytes) -> Any:
    pytia = pytest.importorskip("pytia")
    header = pytia.TIA_RAW_HEADER.unpack(raw[:33])
    return pytia.TiAClient("127.0.0.1", 1)._process_packet(raw, header)


def test_packet_fields_match_the_seed() -> None:
    for raw in make_packets(2):
        ours = TiAPacket.from_data_packet(decode_packet(raw))
        seed = seed_packet(raw)
        assert ours.channels == list(seed.channels)
        assert ours.blocksizes == list(seed.blocksizes)
        assert ours.packet_id == seed.packet_id
        assert ours.packet_number == seed.packet_number
        assert ours.timestamp == seed.timestamp
        assert [tuple(s.tolist()) for s in ours.signals] == list(seed.signals)


def test_get_channel_matches_the_seed() -> None:
    pytia = pytest.importorskip("pytia")
    ours = TiAPacket.from_data_packet(decode_packet(make_packets(2)[1]))
    seed = pytia.TiAPacket()
    seed.signals = [tuple(s.tolist()) for s in ours.signals]
    seed.channels = list(ours.channels)
    seed.blocksizes = list(ours.blocksizes)
    for sindex in range(len(ours.signals)):
        for cindex in range(-3, ours.channels[sindex] + 2):
            mine = ours.get_channel(sindex, cindex)
            theirs = seed.get_channel(sindex, cindex)
            assert list(mine) == list(theirs), (sindex, cindex)
    assert list(ours.get_channel(0, 1)) == [104.0, 105.0, 106.0, 107.0]
    assert ours.get_channel(0, 3) == []
    assert ours.get_channel(1) is ours.signals[1]
    with pytest.raises(IndexError):
        ours.get_channel(3)


def test_empty_packet_defaults_like_the_seed() -> None:
    packet = TiAPacket()
    assert (packet.packet_number, packet.timestamp, packet.packet_id) == (-1, -1, -1)
    assert packet.signals == [] and packet.channels == [] and packet.blocksizes == []
    assert "TiAPacket" in repr(TiAPacket.from_data_packet(decode_packet(make_packets(1)[0])))


# -- the package's lazy exports ---------------------------------------------------


def test_lazy_exports_import_nothing_heavy_up_front() -> None:
    code = (
        "import sys, tia\n"
        "heavy = [m for m in ('numpy', 'socket', 'tia.client.blocking') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from tia import TiAClient, TiAPacket, TiAError\n"
        "from tia.client.blocking import TiAClient as C\n"
        "from tia.client import TiAClient as D\n"
        "assert TiAClient is C is D and issubclass(TiAError, Exception)\n"
        "from tia.client import post_event, recording_request, format_state, TiAException\n"
        "import tia.client.blocking, tia.client.events, tia.client.recording_control\n"
        "assert 'twisted' not in sys.modules, [m for m in sys.modules if 'twisted' in m]\n"
        "print(tia.__version__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == tia.__version__


def test_lazy_exports_are_listed_and_unknown_names_fail() -> None:
    from tia import seed
    from tia.client import control, data, errors, events, packet, recording_control, sequence, stream

    assert isinstance(tia.__all__, list) and isinstance(tia.client.__all__, list)  # lazily made lists
    assert set(tia.__all__) == {"__version__", *blocking.__all__, *seed.__all__}
    modules = (errors, blocking, packet, events, recording_control, sequence, control, data, stream)
    assert set(tia.client.__all__) == {name for module in modules for name in module.__all__}
    for module in modules:
        for name in module.__all__:
            assert getattr(tia.client, name) is getattr(module, name), name
    assert tia.TiAPacket is TiAPacket
    with pytest.raises(AttributeError):
        _ = tia.NoSuchThing


def test_the_client_never_imports_the_server_config_or_sources() -> None:
    code = (
        "import sys, pkgutil, importlib, tia.client\n"
        "for module in pkgutil.iter_modules(tia.client.__path__):\n"
        "    importlib.import_module('tia.client.' + module.name)\n"
        "above = [m for m in sys.modules if m.split('.')[:2] in (['tia', 'server'], ['tia', 'config'],"
        " ['tia', 'sources'], ['tia', 'recording'], ['tia', 'cli'])]\n"
        "assert not above, above\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


# -- txtia's recording control ----------------------------------------------------


def test_recording_requests_and_state(monkeypatch: pytest.MonkeyPatch) -> None:
    report = b'{"state": "on", "path": "/data/run01.tia", "packets": 12, "files": []}'
    ctrl = MockSocket(
        replies=[OK, build_message(RECORDING_STATE, "on", report), OK, build_message(RECORDING_STATE, "stopping")],
        chunk=5,
    )
    client = mock_client(monkeypatch, ctrl)
    assert client.start_recording()
    assert client.recording_state() == {"state": "on", "path": "/data/run01.tia", "packets": 12, "files": []}
    assert client.stop_recording()
    assert client.recording_state() == {"state": "stopping"}  # no document: the state from the reply line
    assert ctrl.sent == [request(START_RECORDING), request(GET_RECORDING_STATE), request(STOP_RECORDING),
                         request(GET_RECORDING_STATE)]


def test_recording_refusals_return_false_or_none_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    refusal = build_error("already recording to /data/run01.tia")
    client = mock_client(monkeypatch, MockSocket(replies=[refusal, build_error("not recording"), build_error()]))
    assert client.start_recording() is False
    assert client.last_error == "already recording to /data/run01.tia"
    assert client.stop_recording() is False
    assert client.last_error == "not recording"
    assert client.recording_state() is None
    assert client.last_error == "Error"


def test_recording_state_answered_with_something_else_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    client = mock_client(monkeypatch, MockSocket(replies=[OK]))
    with pytest.raises(TiAError, match="expected 'RecordingState'"):
        client.recording_state()


def test_server_status_of_a_txtia_server_and_none_from_another(monkeypatch: pytest.MonkeyPatch) -> None:
    document = b'{"packet_rate": 100.0, "sources": [{"name": "eeg", "state": "streaming"}]}'
    ctrl = MockSocket(replies=[build_message("ServerStatus", content=document), build_error()], chunk=7)
    client = mock_client(monkeypatch, ctrl)
    assert client.server_status() == {"packet_rate": 100.0, "sources": [{"name": "eeg", "state": "streaming"}]}
    assert client.server_status() is None  # a server without the extension: the reference's bare Error
    assert client.last_error == "Error"
    assert ctrl.sent == [request("GetServerStatus")] * 2
