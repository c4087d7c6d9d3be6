"""Data packets, version 3 (SPEC section 4): encoding, decoding, stream cutting."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tia.protocol.packet import (
    DEFAULT_MAX_PACKET_SIZE,
    FIXED_HEADER_SIZE,
    MAX_UDP_PAYLOAD,
    PACKET_VERSION,
    DataPacket,
    PacketError,
    PacketStreamDecoder,
    decode_packet,
    encode_body,
    encode_header,
    encode_packet,
    packet_size,
)
from tia.protocol.signals import SIGNAL_TYPES, by_name

EEG = by_name("eeg").flag
EMG = by_name("emg").flag
BP = by_name("bp").flag
BUTTON = by_name("button").flag
AXIS = by_name("axis").flag
EVENT = by_name("event").flag
ALL_TYPE_FLAGS = [t.flag for t in SIGNAL_TYPES]


def f32(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def u16(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}H", *values)


def header(size: int, flags: int, packet_id: int = 0, number: int = 0, stamp: int = 0, version: int = 3) -> bytes:
    return struct.pack("<BIIQQQ", version, size, flags, packet_id, number, stamp)


def stream_decode(chunks: list[bytes], max_size: int = DEFAULT_MAX_PACKET_SIZE) -> list[DataPacket]:
    decoder = PacketStreamDecoder(max_size)
    packets: list[DataPacket] = []
    for chunk in chunks:
        packets += decoder.feed(chunk)
    assert decoder.buffered == 0
    return packets


def same_samples(a: DataPacket, b: DataPacket) -> bool:
    """Bit-exact comparison, independent of DataPacket.__eq__."""
    return (
        (a.packet_id, a.connection_number, a.timestamp, a.flags)
        == (b.packet_id, b.connection_number, b.timestamp, b.flags)
        and list(a.signals) == list(b.signals)
        and all(
            a.signals[f].shape == b.signals[f].shape and a.signals[f].tobytes() == b.signals[f].tobytes()
            for f in a.signals
        )
    )


# ---------------------------------------------------------------------------
# constants and sizes


def test_constants() -> None:
    assert PACKET_VERSION == 3
    assert FIXED_HEADER_SIZE == 33
    assert MAX_UDP_PAYLOAD == 65507
    assert DEFAULT_MAX_PACKET_SIZE >= MAX_UDP_PAYLOAD


@pytest.mark.parametrize(
    ("shapes", "size"),
    [
        ([], 33),
        ([(4, 1)], 53),
        ([(1, 1)], 33 + 4 + 4),
        ([(3, 10), (1, 5)], 33 + 8 + 4 * 35),
        ([(8, 8)] * 3, 33 + 12 + 4 * 192),
    ],
)
def test_packet_size(shapes: list[tuple[int, int]], size: int) -> None:
    assert packet_size(shapes) == size
    blocks = [(1 << i, np.zeros(shape)) for i, shape in enumerate(shapes)]
    assert len(encode_packet(0, 0, 0, blocks)) == size


# ---------------------------------------------------------------------------
# exact bytes


def test_spec_example_four_eeg_channels_blocksize_one() -> None:
    packet_id, number, stamp = 0x0102030405060708, 0, 4_000_000
    wire = encode_packet(packet_id, number, stamp, [(EEG, [[1.0], [2.0], [-0.5], [250.25]])])
    assert len(wire) == 53
    assert wire[0] == 3
    assert wire[1:5] == b"\x35\x00\x00\x00"
    assert wire[5:9] == b"\x01\x00\x00\x00"
    assert wire[9:17] == packet_id.to_bytes(8, "little")
    assert wire[9:17] == b"\x08\x07\x06\x05\x04\x03\x02\x01"
    assert wire[17:25] == number.to_bytes(8, "little")
    assert wire[25:33] == stamp.to_bytes(8, "little")
    assert wire[33:35] == b"\x04\x00"  # channels
    assert wire[35:37] == b"\x01\x00"  # block size
    assert wire[37:53] == f32(1.0, 2.0, -0.5, 250.25)
    assert wire == (
        b"\x03\x35\x00\x00\x00\x01\x00\x00\x00"
        + b"\x08\x07\x06\x05\x04\x03\x02\x01"
        + b"\x00" * 8
        + b"\x00\x09\x3d\x00\x00\x00\x00\x00"
        + b"\x04\x00\x01\x00"
        + b"\x00\x00\x80\x3f\x00\x00\x00\x40\x00\x00\x00\xbf\x00\x40\x7a\x43"
    )


def test_header_fields_at_their_offsets_with_extreme_values() -> None:
    top = (1 << 64) - 1
    wire = encode_header(4, 0xFFFFFFFF, top, top - 1, top - 2)
    assert len(wire) == FIXED_HEADER_SIZE
    assert struct.unpack("<BIIQQQ", wire) == (3, 37, 0xFFFFFFFF, top, top - 1, top - 2)


def test_samples_are_channel_major() -> None:
    block = [[11.0, 12.0, 13.0], [21.0, 22.0, 23.0]]  # 2 channels x 3 samples
    wire = encode_packet(0, 0, 0, [(EEG, block)])
    assert wire[33:37] == u16(2, 3)
    assert wire[37:] == f32(11, 12, 13, 21, 22, 23)
    # The same bytes whatever the memory layout of the array handed in.
    fortran = np.asfortranarray(np.array(block, dtype=np.float64))
    transposed = np.array(block, dtype=np.float32).T.copy().T
    big_endian = np.array(block, dtype=">f4")
    for variant in (fortran, transposed, big_endian):
        assert encode_packet(0, 0, 0, [(EEG, variant)]) == wire
    [decoded] = stream_decode([wire])
    assert decoded.signals[EEG].tolist() == block


def test_signals_in_ascending_flag_order_whatever_the_input_order() -> None:
    eeg = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    bp = [[7.0, 8.0]]
    event = [[9.0]]
    wire = encode_packet(1, 2, 3, [(EVENT, event), (BP, bp), (EEG, eeg)])
    assert wire == encode_packet(1, 2, 3, [(EEG, eeg), (BP, bp), (EVENT, event)])
    assert struct.unpack_from("<I", wire, 5)[0] == EEG | BP | EVENT
    assert wire[33:45] == u16(3, 1, 1, 2, 2, 1)
    assert wire[45:] == f32(1, 2, 3, 4, 5, 6, 7, 8, 9)
    assert len(wire) == packet_size([(3, 2), (1, 2), (1, 1)])
    decoded = decode_packet(wire)
    assert list(decoded.signals) == [EEG, BP, EVENT]
    assert decoded.signals[EVENT].tolist() == [[9.0]]


def test_empty_packet_is_33_bytes() -> None:
    wire = encode_packet(5, 6, 7, [])
    assert wire == header(33, 0, 5, 6, 7)
    assert len(wire) == 33
    packet = decode_packet(wire)
    assert packet == DataPacket(5, 6, 7, 0, {})
    assert packet.signals == {}
    assert stream_decode([wire, wire]) == [packet, packet]


def test_encode_body_and_header_compose_the_packet() -> None:
    blocks = [(BP, [[1.5, 2.5]]), (EEG, [[0.0, 1.0], [2.0, 3.0]])]
    flags, body = encode_body(blocks)
    assert flags == EEG | BP
    assert body == u16(2, 1, 2, 2) + f32(0, 1, 2, 3, 1.5, 2.5)
    whole = encode_header(len(body), flags, 10, 11, 12) + body
    assert whole == encode_packet(10, 11, 12, blocks)
    assert encode_body([]) == (0, b"")


def test_values_are_converted_to_float32() -> None:
    wire = encode_packet(0, 0, 0, [(EEG, [[1, 2], [3, 4]]), (BP, np.array([[0.1]], dtype=np.float64))])
    assert wire[-4:] == f32(0.1)
    decoded = decode_packet(wire)
    assert decoded.signals[EEG].dtype == np.float32
    assert decoded.signals[EEG].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert decoded.signals[BP][0, 0] == np.float32(0.1)


def test_special_float_values_survive_bit_exact() -> None:
    # A quiet NaN with a payload, a negative NaN, infinities, -0, a denormal, the maximum.
    special = b"\x01\x00\xc0\x7f" + f32(-np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4e38)
    values = np.frombuffer(special, "<f4").reshape(1, 7)
    wire = encode_packet(0, 0, 0, [(EEG, values)])
    assert wire[37:] == special
    decoded = decode_packet(wire).signals[EEG]
    assert decoded.tobytes() == special
    assert np.isnan(decoded[0, 0]) and np.isnan(decoded[0, 1])
    assert np.signbit(decoded[0, 4])


# ---------------------------------------------------------------------------
# DataPacket equality


def test_data_packet_equality_compares_samples_bitwise() -> None:
    wire = encode_packet(1, 2, 3, [(EEG, [[1.0, np.nan], [3.0, 4.0]]), (BUTTON, [[1.0]])])
    first, second = decode_packet(wire), decode_packet(wire)
    assert first is not second
    assert first == second
    assert not (first != second)
    changed = encode_packet(1, 2, 3, [(EEG, [[1.0, np.nan], [3.0, 5.0]]), (BUTTON, [[1.0]])])
    assert decode_packet(changed) != first
    for other in (
        encode_packet(9, 2, 3, [(EEG, [[1.0, np.nan], [3.0, 4.0]]), (BUTTON, [[1.0]])]),
        encode_packet(1, 2, 3, [(EEG, [[1.0, np.nan], [3.0, 4.0]])]),
        encode_packet(1, 2, 3, [(EEG, [[1.0, np.nan, 3.0, 4.0]]), (BUTTON, [[1.0]])]),
    ):
        assert decode_packet(other) != first
    assert first != "not a packet"
    # A packet built by hand compares by its float32 samples.
    by_hand = {
        EEG: np.array([[1, np.nan], [3, 4]], dtype=np.float32),
        BUTTON: np.ones((1, 1), dtype=np.float32),
    }
    assert first == DataPacket(1, 2, 3, EEG | BUTTON, by_hand)


def test_data_packet_is_frozen_and_unhashable() -> None:
    packet = decode_packet(encode_packet(0, 0, 0, [(EEG, [[1.0]])]))
    with pytest.raises(AttributeError):
        packet.flags = 0  # type: ignore[misc]  # frozen: what is under test
    with pytest.raises(TypeError):
        hash(packet)


# ---------------------------------------------------------------------------
# round trip


@st.composite
def packet_contents(draw: st.DrawFn, max_signals: int = 6) -> tuple[int, int, int, list[tuple[int, np.ndarray]]]:
    flags = draw(st.sets(st.sampled_from(ALL_TYPE_FLAGS), max_size=max_signals))
    blocks = []
    for flag in flags:
        shape = (draw(st.integers(1, 8)), draw(st.integers(1, 8)))
        blocks.append((flag, draw(arrays(np.float32, shape))))
    ids = st.integers(0, (1 << 64) - 1)
    return draw(ids), draw(ids), draw(ids), blocks


@settings(max_examples=200, deadline=None)
@given(packet_contents())
def test_encode_decode_round_trip(
    content: tuple[int, int, int, list[tuple[int, np.ndarray]]],
) -> None:
    packet_id, number, stamp, blocks = content
    wire = encode_packet(packet_id, number, stamp, blocks)
    assert len(wire) == packet_size([b.shape for _, b in sorted(blocks, key=lambda x: x[0])])
    packet = decode_packet(wire)
    assert (packet.packet_id, packet.connection_number, packet.timestamp) == (
        packet_id,
        number,
        stamp,
    )
    expected_flags = 0
    for flag, _ in blocks:
        expected_flags |= flag
    assert packet.flags == expected_flags
    assert list(packet.signals) == sorted(flag for flag, _ in blocks)
    for flag, block in blocks:
        got = packet.signals[flag]
        assert got.dtype == np.float32
        assert got.shape == block.shape
        assert got.tobytes() == block.astype("<f4").tobytes()  # NaN-safe
    # Re-encoding the decoded packet gives the same bytes.
    assert encode_packet(packet_id, number, stamp, list(packet.signals.items())) == wire
    [streamed] = stream_decode([wire])
    assert same_samples(streamed, packet)
    assert streamed == packet


# ---------------------------------------------------------------------------
# stream decoding


def _varying_packets() -> list[bytes]:
    eeg = np.arange(8, dtype=np.float32).reshape(4, 2)
    return [
        encode_packet(0, 0, 0, [(EEG, eeg)]),
        encode_packet(1, 1, 1000, [(EEG, eeg + 1), (BUTTON, [[1.0]])]),
        encode_packet(2, 2, 2000, [(EEG, eeg + 2)]),
        encode_packet(3, 3, 3000, [(EVENT, [[7.0, 8.0]]), (EEG, eeg + 3), (BUTTON, [[0.0]])]),
        encode_packet(4, 4, 4000, []),
        encode_packet(5, 5, 5000, [(AXIS, [[0.25], [-0.25]]), (EEG, eeg + 5)]),
    ]


def test_varying_flags_from_packet_to_packet() -> None:
    wires = _varying_packets()
    packets = stream_decode([b"".join(wires)])
    assert [p.flags for p in packets] == [
        EEG,
        EEG | BUTTON,
        EEG,
        EEG | BUTTON | EVENT,
        0,
        EEG | AXIS,
    ]
    assert [p.packet_id for p in packets] == list(range(6))
    assert packets[1].signals[BUTTON].tolist() == [[1.0]]
    assert BUTTON not in packets[2].signals
    assert packets[3].signals[EVENT].tolist() == [[7.0, 8.0]]
    assert packets[5].signals[AXIS].tolist() == [[0.25], [-0.25]]
    for index, packet in enumerate(packets):
        if packet.flags & EEG:
            expected = np.arange(8, dtype=np.float32).reshape(4, 2) + index
            assert packet.signals[EEG].tobytes() == expected.tobytes()
    assert packets == [decode_packet(w) for w in wires]


def test_stream_split_at_every_byte_boundary() -> None:
    wires = _varying_packets()[:4]
    stream = b"".join(wires)
    expected = [decode_packet(w) for w in wires]
    for split in range(len(stream) + 1):
        decoder = PacketStreamDecoder()
        first = decoder.feed(stream[:split])
        assert decoder.buffered == split - sum(len(w) for w in wires[: len(first)])
        second = decoder.feed(stream[split:])
        assert first + second == expected, split
        assert decoder.buffered == 0


def test_stream_byte_by_byte() -> None:
    wires = _varying_packets()
    stream = b"".join(wires)
    decoder = PacketStreamDecoder()
    packets: list[DataPacket] = []
    ends = set()
    total = 0
    for wire in wires:
        total += len(wire)
        ends.add(total)
    for index in range(len(stream)):
        got = decoder.feed(stream[index : index + 1])
        # A packet comes out exactly with its last byte.
        assert len(got) == (1 if index + 1 in ends else 0)
        packets += got
    assert packets == [decode_packet(w) for w in wires]
    assert decoder.buffered == 0


def test_many_packets_per_chunk() -> None:
    wires = [encode_packet(i, i, i * 4000, [(EEG, np.full((4, 1), i, dtype=np.float32))]) for i in range(2000)]
    packets = stream_decode([b"".join(wires)])
    assert len(packets) == 2000
    assert [p.packet_id for p in packets] == list(range(2000))
    assert all(p.signals[EEG][0, 0] == p.packet_id for p in packets)


def test_stream_keeps_partial_tail_between_chunks() -> None:
    wire = _varying_packets()[1]
    decoder = PacketStreamDecoder()
    assert decoder.feed(wire + wire[:10]) == [decode_packet(wire)]
    assert decoder.buffered == 10
    assert decoder.feed(wire[10:40]) == []
    assert decoder.buffered == 40
    assert decoder.feed(wire[40:] + wire) == [decode_packet(wire)] * 2
    assert decoder.buffered == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(packet_contents(max_signals=3), min_size=1, max_size=4),
    st.lists(st.integers(0, 3000), max_size=10),
)
def test_stream_arbitrary_chunking(
    contents: list[tuple[int, int, int, list[tuple[int, np.ndarray]]]], points: list[int]
) -> None:
    wires = [encode_packet(*content) for content in contents]
    stream = b"".join(wires)
    bounds = sorted({min(p, len(stream)) for p in points})
    chunks = [stream[a:b] for a, b in zip([0, *bounds], [*bounds, len(stream)], strict=True)]
    packets = stream_decode(chunks)
    assert len(packets) == len(wires)
    for packet, wire in zip(packets, wires, strict=True):
        assert same_samples(packet, decode_packet(wire))


# ---------------------------------------------------------------------------
# rejections


@pytest.mark.parametrize("version", [0, 1, 2, 4, 0x33, 255])
def test_reject_wrong_version(version: int) -> None:
    good = encode_packet(0, 0, 0, [(EEG, [[1.0]])])
    bad = bytes([version]) + good[1:]
    with pytest.raises(PacketError, match="version"):
        decode_packet(bad)
    with pytest.raises(PacketError, match="version"):
        PacketStreamDecoder().feed(bad)
    with pytest.raises(PacketError, match="version"):
        PacketStreamDecoder().feed(good + bad)


@pytest.mark.parametrize(
    ("flags", "size"),
    [
        (0, 0),
        (0, 32),
        (EEG, 33),
        (EEG, 36),
        (EEG | BP, 40),
        (EEG | BP | EVENT, 44),
        (0xFFFFFFFF, 33 + 4 * 31),
    ],
)
def test_reject_size_below_the_variable_header(flags: int, size: int) -> None:
    body = b"\x01\x00" * 64
    wire = header(size, flags) + body
    with pytest.raises(PacketError, match="below"):
        decode_packet(wire[: max(size, 33)])
    with pytest.raises(PacketError, match="below"):
        PacketStreamDecoder().feed(wire)


def test_reject_size_inconsistent_with_channels_and_blocks() -> None:
    good = encode_packet(0, 0, 0, [(EEG, np.zeros((2, 3))), (BP, np.zeros((1, 3)))])
    # claims 3 eeg channels but carries the samples of 2
    bad = bytearray(good)
    bad[33:35] = u16(3)
    with pytest.raises(PacketError, match="match"):
        decode_packet(bytes(bad))
    with pytest.raises(PacketError, match="match"):
        PacketStreamDecoder().feed(bytes(bad))
    # a size field (and length) larger than channels x blocks say: padding
    padded = header(len(good) + 4, EEG | BP) + good[33:] + b"\x00" * 4
    with pytest.raises(PacketError, match="match"):
        decode_packet(padded)
    with pytest.raises(PacketError, match="match"):
        PacketStreamDecoder().feed(padded)
    # a zero block size cannot account for the samples that follow
    with pytest.raises(PacketError, match="match"):
        decode_packet(header(33 + 4 + 4, EEG) + u16(4, 0) + f32(1))


def test_reject_size_above_max_size() -> None:
    wire = encode_packet(0, 0, 0, [(EEG, np.zeros((4, 1)))])
    assert decode_packet(wire, max_size=53).flags == EEG
    with pytest.raises(PacketError, match="exceeds"):
        decode_packet(wire, max_size=52)
    with pytest.raises(PacketError, match="exceeds"):
        PacketStreamDecoder(max_size=52).feed(wire)


def test_stream_rejects_huge_size_at_once_without_waiting_for_it() -> None:
    decoder = PacketStreamDecoder()
    head = header(0xFFFFFFFF, EEG)
    assert decoder.feed(head[:32]) == []  # not yet a whole fixed header
    with pytest.raises(PacketError, match="exceeds"):
        decoder.feed(head[32:])
    with pytest.raises(PacketError, match="exceeds"):
        PacketStreamDecoder(max_size=MAX_UDP_PAYLOAD).feed(header(MAX_UDP_PAYLOAD + 1, EEG))


def test_stream_waits_for_a_whole_packet_within_the_limit() -> None:
    decoder = PacketStreamDecoder(max_size=1000)
    wire = encode_packet(0, 0, 0, [(EEG, np.zeros((10, 20)))])
    assert len(wire) == 837
    assert decoder.feed(wire[:-1]) == []
    assert decoder.buffered == 836
    assert decoder.feed(wire[-1:]) == [decode_packet(wire)]


def test_reject_truncated_or_padded_datagram() -> None:
    wire = encode_packet(0, 0, 0, [(EEG, np.ones((4, 2)))])
    with pytest.raises(PacketError, match="arrived"):
        decode_packet(wire[:-1])
    with pytest.raises(PacketError, match="arrived"):
        decode_packet(wire[:40])
    with pytest.raises(PacketError, match="arrived"):
        decode_packet(wire + b"\x00")
    with pytest.raises(PacketError, match="arrived"):
        decode_packet(wire + wire)
    for length in (0, 1, 32):
        with pytest.raises(PacketError, match="short"):
            decode_packet(wire[:length])


def test_packet_error_is_a_value_error() -> None:
    assert issubclass(PacketError, ValueError)


@pytest.mark.parametrize(
    "blocks",
    [
        [(0, [[1.0]])],
        [(-1, [[1.0]])],
        [(3, [[1.0]])],
        [(EEG | BP, [[1.0]])],
        [(EEG, [[1.0]]), (EEG, [[2.0]])],
        [(BP, [[1.0]]), (EEG, [[1.0]]), (BP, [[2.0]])],
        [(1 << 32, [[1.0]])],
        [(1 << 40, [[1.0]])],
    ],
)
def test_encode_body_rejects_bad_flags(blocks: list[tuple[int, list[list[float]]]]) -> None:
    with pytest.raises(ValueError, match="flag"):
        encode_body(blocks)


@pytest.mark.parametrize(
    "block",
    [
        1.0,
        [1.0, 2.0],
        [[[1.0]]],
        np.zeros((0, 1)),
        np.zeros((1, 0)),
        np.zeros((0, 0)),
        np.zeros((0x10000, 1)),
        np.zeros((1, 0x10000)),
    ],
)
def test_encode_body_rejects_bad_shapes(block: object) -> None:
    with pytest.raises(ValueError, match="shape"):
        encode_body([(EEG, block)])  # type: ignore[list-item]  # the bad blocks under test


def test_encode_body_accepts_the_largest_shapes() -> None:
    flags, body = encode_body([(EEG, np.zeros((0xFFFF, 1))), (BP, np.zeros((1, 0xFFFF)))])
    assert flags == EEG | BP
    assert body[:8] == u16(0xFFFF, 1, 1, 0xFFFF)
    assert len(body) == 8 + 4 * 2 * 0xFFFF


def test_encode_body_rejects_ragged_or_non_numeric_input() -> None:
    with pytest.raises(ValueError):
        encode_body([(EEG, [[1.0], [1.0, 2.0]])])
    with pytest.raises(ValueError):
        encode_body([(EEG, [["a"]])])


# ---------------------------------------------------------------------------
# fuzz


def _decode_or_packet_error(data: bytes, max_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
    try:
        packet = decode_packet(data, max_size)
    except PacketError:
        return
    assert isinstance(packet, DataPacket)
    assert len(data) == packet_size([s.shape for s in packet.signals.values()])


def _stream_or_packet_error(chunks: list[bytes], max_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
    decoder = PacketStreamDecoder(max_size)
    try:
        for chunk in chunks:
            for packet in decoder.feed(chunk):
                assert isinstance(packet, DataPacket)
    except PacketError:
        return
    # What is held back is less than one packet, never a whole one.
    assert decoder.buffered <= len(b"".join(chunks))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 200))
def test_fuzz_arbitrary_bytes(data: bytes, split: int) -> None:
    _decode_or_packet_error(data)
    _decode_or_packet_error(data, max_size=64)
    _stream_or_packet_error([data[:split], data[split:]])
    _stream_or_packet_error([data], max_size=64)


@st.composite
def plausible_packets(draw: st.DrawFn) -> bytes:
    """Headers that mostly pass the first checks, so the deeper ones get exercised."""
    flags = draw(st.integers(0, 0xFFFFFFFF) | st.sets(st.sampled_from(ALL_TYPE_FLAGS)).map(sum))
    count = bin(flags).count("1")
    shapes = draw(st.lists(st.integers(0, 5), min_size=2 * count, max_size=2 * count))
    samples = draw(st.binary(max_size=120))
    body = u16(*shapes) + samples
    size = draw(st.sampled_from([33 + len(body), 33 + 4 * count]) | st.integers(0, 400))
    version = draw(st.sampled_from([3, 3, 3, 2, 4]))
    return header(size, flags, version=version) + body


@settings(max_examples=200, deadline=None)
@given(plausible_packets(), st.lists(st.integers(0, 600), max_size=4))
def test_fuzz_plausible_packets(data: bytes, points: list[int]) -> None:
    _decode_or_packet_error(data)
    bounds = sorted({min(p, len(data)) for p in points})
    chunks = [data[a:b] for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True)]
    _stream_or_packet_error(chunks)
    _stream_or_packet_error([data + data])


def test_stream_error_keeps_the_valid_packets_before_it() -> None:
    good = encode_packet(1, 0, 10, [(1, [[1.0, 2.0]])])
    bad = b"\x04" + good[1:]  # version 4
    decoder = PacketStreamDecoder()
    with pytest.raises(PacketError) as info:
        decoder.feed(good + good + bad)
    assert [p.packet_id for p in info.value.packets] == [1, 1]
    assert decoder.buffered == 0
