"""Our clients read either sample order (SPEC section 4, "Sample order inside a signal").

A txtia server with ``[server] sample_order = sample-major`` sends each
signal's block sample by sample (s1: ch1..chN, s2: ...), for eegdev; libtia
and txtia by default send it channel by channel. The decoder, both clients,
their data protocols and ``tia record`` take the order and always hand out
(channels, block size) arrays: round trips in both orders at block sizes 1
and more, then a live daemon serving sample-major read exactly (ramp values)
by the Twisted client, the blocking client and ``tia record``.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from support import SocketTestCase, ramp_config, ramp_values, start_daemon, stream_blocking, until
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.testing import StringTransport

from tia import TiAClient
from tia.cli import main
from tia.client import TiAStream
from tia.client.data import TiATCPDataProtocol, TiAUDPDataProtocol
from tia.protocol.packet import (
    SAMPLE_ORDERS,
    DataPacket,
    PacketStreamDecoder,
    decode_packet,
    encode_body,
    encode_header,
)
from tia.protocol.signals import SIGNAL_TYPES, by_name

EEG, BP = by_name("eeg").flag, by_name("bp").flag
ALL_TYPE_FLAGS = [t.flag for t in SIGNAL_TYPES]

Blocks = list[tuple[int, np.ndarray]]


def wire(
    blocks: Sequence[tuple[int, npt.ArrayLike]], order: str, packet_id: int = 0, number: int = 0, timestamp: int = 0
) -> bytes:
    """A whole packet holding ``blocks`` ((channels, block size) each), its samples in ``order``."""
    flags, body = encode_body(blocks, order)
    return encode_header(len(body), flags, packet_id, number, timestamp) + body


def f32(*values: float) -> bytes:
    return np.array(values, dtype="<f4").tobytes()


# -- the decoder -------------------------------------------------------------------


def test_sample_major_bytes_decode_as_channels_by_samples() -> None:
    block = [[11.0, 12.0, 13.0], [21.0, 22.0, 23.0]]  # 2 channels x 3 samples
    packet = wire([(EEG, block)], "sample-major")
    assert packet[37:] == f32(11, 21, 12, 22, 13, 23)  # s1 ch1 ch2, s2 ch1 ch2, ...
    for decoded in (decode_packet(packet, sample_order="sample-major"),
                    *PacketStreamDecoder(sample_order="sample-major").feed(packet)):
        samples = decoded.signals[EEG]
        assert samples.tolist() == block
        assert samples.flags.c_contiguous and not samples.flags.writeable  # as the channel-major views
    # Read as channel-major, the same bytes are another block: the client must know the order.
    assert decode_packet(packet).signals[EEG].tolist() == [[11.0, 21.0, 12.0], [22.0, 13.0, 23.0]]


@pytest.mark.parametrize("shape", [(4, 1), (1, 5), (1, 1)])
def test_both_orders_are_the_same_bytes_with_one_sample_or_one_channel(shape: tuple[int, int]) -> None:
    block = np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape) + 0.5
    packets = {order: wire([(EEG, block)], order) for order in SAMPLE_ORDERS}
    assert packets["channel-major"] == packets["sample-major"]
    for order in SAMPLE_ORDERS:
        samples = decode_packet(packets[order], sample_order=order).signals[EEG]
        np.testing.assert_array_equal(samples, block)
        assert samples.flags.c_contiguous and not samples.flags.writeable


@st.composite
def packets(draw: st.DrawFn) -> tuple[str, Blocks]:
    """A sample order and blocks of 0..4 signals, block sizes 1 and more, channels 1 and more."""
    flags = draw(st.sets(st.sampled_from(ALL_TYPE_FLAGS), max_size=4))
    blocks = [(flag, draw(arrays(np.float32, (draw(st.integers(1, 6)), draw(st.integers(1, 6))))))
              for flag in sorted(flags)]
    return draw(st.sampled_from(SAMPLE_ORDERS)), blocks


@settings(max_examples=200, deadline=None)
@given(packets(), st.integers(1, 64))
def test_round_trip_in_either_order(content: tuple[str, Blocks], chunk: int) -> None:
    order, blocks = content
    packet = wire(blocks, order, packet_id=7, number=3, timestamp=99)
    decoded = decode_packet(packet, sample_order=order)
    decoder = PacketStreamDecoder(sample_order=order)
    streamed: list[DataPacket] = []
    for start in range(0, 2 * len(packet), chunk):  # two packets back to back, cut anywhere
        streamed += decoder.feed((packet + packet)[start:start + chunk])
    assert streamed == [decoded, decoded] and decoder.buffered == 0
    assert (decoded.packet_id, decoded.connection_number, decoded.timestamp) == (7, 3, 99)
    assert list(decoded.signals) == [flag for flag, _ in blocks]
    for flag, block in blocks:
        samples = decoded.signals[flag]
        assert samples.shape == block.shape and samples.dtype == np.float32
        assert samples.tobytes() == block.astype("<f4").tobytes()  # bit for bit, NaN included
        assert samples.flags.c_contiguous and not samples.flags.writeable


def test_an_unknown_order_is_refused_up_front() -> None:
    packet = wire([(EEG, [[1.0]])], "channel-major")
    for attempt in (
        lambda: decode_packet(packet, sample_order="row-major"),
        lambda: PacketStreamDecoder(sample_order="row-major"),
        lambda: TiAClient("127.0.0.1", 9000, sample_order="row-major"),
        lambda: TiATCPDataProtocol(lambda p: None, sample_order="row-major"),
        lambda: TiAUDPDataProtocol(lambda p: None, sample_order="row-major"),
        lambda: TiAStream(reactor, "tcp:127.0.0.1:9000", sample_order="row-major"),
    ):
        with pytest.raises(ValueError, match="'row-major' is not one of channel-major, sample-major"):
            attempt()


# -- the Twisted data protocols ----------------------------------------------------------


def test_data_protocols_read_sample_major() -> None:
    eeg = np.arange(12, dtype=np.float32).reshape(3, 4)
    bp = np.array([[0.5, -0.5, 1.5, -1.5]], dtype=np.float32)
    stream = b"".join(wire([(EEG, eeg + n), (BP, bp * n)], "sample-major", n, n) for n in range(3))
    received: list[DataPacket] = []
    tcp = TiATCPDataProtocol(received.append, sample_order="sample-major")
    tcp.makeConnection(StringTransport())
    for byte in range(len(stream)):
        tcp.dataReceived(stream[byte:byte + 1])
    udp = TiAUDPDataProtocol(received.append, sample_order="sample-major")
    udp.datagramReceived(wire([(EEG, eeg + 3), (BP, bp * 3)], "sample-major", 3, 3), ("127.0.0.1", 1))
    assert [p.packet_id for p in received] == [0, 1, 2, 3]
    for n, packet in enumerate(received):
        np.testing.assert_array_equal(packet.signals[EEG], eeg + n)
        np.testing.assert_array_equal(packet.signals[BP], bp * n)
    assert tcp.gaps.gaps == udp.gaps.gaps == 0


# -- live: a sample-major daemon read by both clients --------------------------------------

CHANNELS, BLOCK = 4, 10


class SampleMajorDaemonTests(SocketTestCase):
    """The daemon's service, ``sample_order = sample-major``, 4 ramp channels in blocks of 10 at 1 kHz."""

    timeout = 60

    def setUp(self) -> None:
        config = ramp_config(rate=1000, blocksize=BLOCK, channels=CHANNELS, server_extra="sample_order = sample-major")
        self.serve(config)

    def check(self, ids: list[int], numbers: list[int], blocks: list[Any]) -> None:
        """Gap-free and every block exactly the ramp's (channels, block size)."""
        self.assertGreaterEqual(len(ids), 30)
        self.assertEqual(numbers, list(range(len(numbers))))
        self.assertEqual(ids, list(range(ids[0], ids[0] + len(ids))))
        for packet_id, block in zip(ids, blocks, strict=True):
            np.testing.assert_array_equal(block, ramp_values(CHANNELS, packet_id * BLOCK, BLOCK))

    @inlineCallbacks
    def stream_30(self, transport: Literal["TCP", "UDP"]) -> Generator[Deferred[Any], Any, list[DataPacket]]:
        """30 packets or more from our Twisted client over ``transport``, asking for sample-major order."""
        packets: list[DataPacket] = []
        stream = TiAStream(reactor, f"tcp:127.0.0.1:{self.port}", transport=transport,
                           onPacket=packets.append, sample_order="sample-major")
        yield stream.start()
        yield until(lambda: len(packets) >= 30)
        yield stream.stop()
        return packets

    @inlineCallbacks
    def test_twisted_client_tcp_and_udp(self) -> Any:
        for transport in ("TCP", "UDP"):
            packets = yield self.stream_30(transport)
            self.check([p.packet_id for p in packets], [p.connection_number for p in packets],
                       [p.signals[EEG] for p in packets])

    @inlineCallbacks
    def test_blocking_client_tcp_and_udp(self) -> Any:
        def run(udp: bool, order: str) -> list[Any]:
            return stream_blocking(self.port, udp, sample_order=order)

        for udp in (False, True):
            packets = yield threads.deferToThread(run, udp, "sample-major")
            self.check([p.packet_id for p in packets], [p.packet_number for p in packets],
                       [p.arrays[0] for p in packets])
            first = packets[0]
            expected = ramp_values(CHANNELS, first.packet_id * BLOCK, BLOCK)
            self.assertEqual(first.get_channel(0, 1).tolist(), expected[1])  # the seed's flat view, channel-major
        # A client left at the default order misreads this server: the option is not cosmetic.
        [first, *_] = yield threads.deferToThread(run, False, "channel-major")
        self.assertNotEqual(first.arrays[0].tolist(), ramp_values(CHANNELS, first.packet_id * BLOCK, BLOCK))


# -- live: tia record from a sample-major daemon (a process of its own) --------------------

SAMPLE_MAJOR_INI = """\
[server]
control = tcp:0:interface=127.0.0.1
sample_order = sample-major

[source:eeg]
driver = ramp
rate = 1000
blocksize = 10
channels = 4
type = eeg

[source:bp]
driver = ramp
rate = 100
blocksize = 1
channels = 1
type = bp
"""


@pytest.fixture(scope="module")
def sample_major_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("sample-major")
    config = workdir / "server.ini"
    config.write_text(SAMPLE_MAJOR_INI, encoding="utf-8")
    yield from start_daemon(["--config", str(config)], workdir)


def test_tia_record_reads_a_sample_major_daemon_exactly(
    capsys: pytest.CaptureFixture[str], sample_major_server: str, tmp_path: Path
) -> None:
    path = tmp_path / "ramp.npz"
    code = main(["record", sample_major_server, "--sample-order", "sample-major", "-o", str(path),
                 "--seconds", "1", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "100 packets, 0 missing" in out
    with np.load(path) as data:
        first = int(data["first_packet_id"])
        np.testing.assert_array_equal(data["eeg"], np.array(ramp_values(4, first * 10, 1000), np.float32))
        np.testing.assert_array_equal(data["bp"], np.array(ramp_values(1, first, 100), np.float32))


def test_sample_order_option_of_the_commands_that_read_data(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("monitor", "record", "lsl"):
        assert main([command, "--help"]) == 0
        assert "--sample-order {channel-major,sample-major}" in capsys.readouterr().out
    assert main(["monitor", "--sample-order", "row-major"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tia monitor: error: argument --sample-order: invalid choice: 'row-major'")
