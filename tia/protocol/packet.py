"""TiA data packet version 3 (SPEC section 4), little-endian throughout.

The server encodes a tick's body (variable header and samples) once and each
subscriber prefixes only its own 33-byte fixed header; clients decode every
packet's variable header afresh, because aperiodic signals come and go.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tia.protocol.signals import flags_in

PACKET_VERSION = 3
FIXED_HEADER = struct.Struct("<BIIQQQ")
FIXED_HEADER_SIZE = FIXED_HEADER.size  # 33
SAMPLE_DTYPE = np.dtype("<f4")
DEFAULT_MAX_PACKET_SIZE = 16 << 20
MAX_UDP_PAYLOAD = 65507

SampleArray = npt.NDArray[np.float32]


class PacketError(ValueError):
    """Bytes that are not a valid version 3 data packet.

    Raised by ``PacketStreamDecoder.feed``, ``packets`` holds the valid packets
    that preceded the bad one in the same chunk, so none of them is lost.
    """

    packets: list[DataPacket]

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.packets = []


@dataclass(frozen=True, eq=False)
class DataPacket:
    """One decoded packet. ``signals`` maps each present flag to a (channels, block) array.

    Two packets are equal when their header fields are equal and their samples
    are the same float32 values bit for bit (so NaN equals the same NaN).
    """

    packet_id: int
    connection_number: int
    timestamp: int
    flags: int
    signals: dict[int, SampleArray] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        # The generated __eq__ compared the dicts of arrays, which asks numpy
        # for the truth value of an elementwise comparison and raises.
        if not isinstance(other, DataPacket):
            return NotImplemented
        if (self.packet_id, self.connection_number, self.timestamp, self.flags) != (
            other.packet_id,
            other.connection_number,
            other.timestamp,
            other.flags,
        ) or self.signals.keys() != other.signals.keys():
            return False
        for flag, samples in self.signals.items():
            mine = np.asarray(samples, SAMPLE_DTYPE)
            theirs = np.asarray(other.signals[flag], SAMPLE_DTYPE)
            if mine.shape != theirs.shape or mine.tobytes() != theirs.tobytes():
                return False
        return True

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside: unhashable


def encode_body(blocks: Sequence[tuple[int, npt.ArrayLike]]) -> tuple[int, bytes]:
    """Flags and body (variable header + samples) of a packet holding ``blocks``.

    ``blocks`` are (flag, 2-D array channels x block size); they are put in
    ascending flag order, each channel's block contiguous.
    """
    ordered = sorted(blocks, key=lambda item: item[0])
    flags = 0
    arrays = []
    for flag, block in ordered:
        if flag & flags or flag <= 0 or flag > 0xFFFFFFFF or flag & (flag - 1):
            raise ValueError(f"signal flag 0x{flag:x} is not a single, unique bit")
        flags |= flag
        array = np.asarray(block, dtype=SAMPLE_DTYPE)
        if array.ndim != 2 or not 0 < array.shape[0] <= 0xFFFF or not 0 < array.shape[1] <= 0xFFFF:
            raise ValueError(f"block of signal 0x{flag:x} has shape {array.shape}")
        arrays.append(array)
    count = len(arrays)
    variable = struct.pack(
        f"<{2 * count}H", *[a.shape[0] for a in arrays], *[a.shape[1] for a in arrays]
    )
    return flags, variable + b"".join(a.tobytes() for a in arrays)


def encode_header(
    body_size: int, flags: int, packet_id: int, connection_number: int, timestamp: int
) -> bytes:
    """The fixed 33-byte header of a packet whose body is ``body_size`` bytes."""
    return FIXED_HEADER.pack(
        PACKET_VERSION,
        FIXED_HEADER_SIZE + body_size,
        flags,
        packet_id,
        connection_number,
        timestamp,
    )


def encode_packet(
    packet_id: int,
    connection_number: int,
    timestamp: int,
    blocks: Sequence[tuple[int, npt.ArrayLike]],
) -> bytes:
    """A whole packet; for tests and clients. The server reuses one body for all."""
    flags, body = encode_body(blocks)
    return encode_header(len(body), flags, packet_id, connection_number, timestamp) + body


def packet_size(shapes: Sequence[tuple[int, int]]) -> int:
    """Bytes of a packet holding signals of these (channels, block size) shapes."""
    return FIXED_HEADER_SIZE + 4 * len(shapes) + 4 * sum(c * b for c, b in shapes)


def _check_fixed_header(
    data: bytes | bytearray | memoryview, offset: int, max_size: int
) -> tuple[int, ...]:
    fields = FIXED_HEADER.unpack_from(data, offset)
    version, size, flags = fields[0], fields[1], fields[2]
    if version != PACKET_VERSION:
        raise PacketError(f"packet version {version}, expected {PACKET_VERSION}")
    minimum = FIXED_HEADER_SIZE + 4 * bin(flags).count("1")
    if size < minimum:
        raise PacketError(f"packet size {size} is below the {minimum} bytes its header needs")
    if size > max_size:
        raise PacketError(f"packet size {size} exceeds the limit of {max_size} bytes")
    return fields


def decode_packet(data: bytes, max_size: int = DEFAULT_MAX_PACKET_SIZE) -> DataPacket:
    """Decode exactly one packet (a UDP datagram, or one packet cut from a stream)."""
    if len(data) < FIXED_HEADER_SIZE:
        raise PacketError(f"{len(data)} bytes are too short for a packet header")
    _, size, flags, packet_id, connection_number, timestamp = _check_fixed_header(
        data, 0, max_size
    )
    if size != len(data):
        raise PacketError(f"packet says {size} bytes but {len(data)} arrived")
    present = flags_in(flags)
    count = len(present)
    shapes = struct.unpack_from(f"<{2 * count}H", data, FIXED_HEADER_SIZE)
    expected = packet_size(list(zip(shapes[:count], shapes[count:], strict=True)))
    if expected != size:
        raise PacketError(
            f"packet size {size} does not match its header (channels x blocks say {expected})"
        )
    signals: dict[int, SampleArray] = {}
    offset = FIXED_HEADER_SIZE + 4 * count
    for index, flag in enumerate(present):
        channels, block = shapes[index], shapes[count + index]
        samples = np.frombuffer(data, SAMPLE_DTYPE, channels * block, offset)
        signals[flag] = samples.reshape(channels, block)
        offset += 4 * channels * block
    return DataPacket(packet_id, connection_number, timestamp, flags, signals)


class PacketStreamDecoder:
    """Cuts a TCP byte stream into packets. Any invalid header raises ``PacketError``;
    the stream cannot be trusted after that, so the caller drops the connection."""

    def __init__(self, max_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
        self.max_size = max_size
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete packet held back."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[DataPacket]:
        buffer = self._buffer
        buffer += data
        packets: list[DataPacket] = []
        offset = 0
        available = len(buffer)
        try:
            while available - offset >= FIXED_HEADER_SIZE:
                size = _check_fixed_header(buffer, offset, self.max_size)[1]
                if available - offset < size:
                    break
                packets.append(decode_packet(bytes(buffer[offset : offset + size]), self.max_size))
                offset += size
        except PacketError as error:
            buffer.clear()  # the stream cannot be trusted past this point
            error.packets = packets
            raise
        if offset:
            del buffer[:offset]
        return packets
