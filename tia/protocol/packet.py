"""TiA data packet version 3 (SPEC section 4), little-endian throughout.

The server encodes a tick's body (variable header and samples) once and each
subscriber prefixes only its own 33-byte fixed header; clients decode every
packet's variable header afresh, because aperiodic signals come and go.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
Buffer = bytes | bytearray | memoryview


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


SAMPLE_ORDERS = ("channel-major", "sample-major")
"""How a signal's samples are laid out in a packet. ``channel-major`` (ch1 s1..sB, ch2 s1..sB, ...)
is what libtia/SignalServer, pytia and pytiaclient send and read; ``sample-major`` (s1 ch1..chN,
s2 ...) is how EPFL's eegdev ``tobiia`` plugin reads a block (SPEC section 4). Both are the same
bytes at block size 1."""

_LITTLE_ENDIAN = sys.byteorder == "little"


@dataclass(frozen=True)
class SignalShape:
    """One signal's place in the packets of a stream: its flag bit and its block's shape."""

    flag: int
    channels: int
    block_size: int

    @property
    def sample_bytes(self) -> int:
        return 4 * self.channels * self.block_size


class PresentSignals:
    """The signals present in one packet (one value of the flags), laid out once.

    Holds the packet's variable header (channel counts, then block sizes) and
    where each signal's samples start in the body, so neither is computed per
    packet. Built by ``BodyLayout`` and cached per flags value.
    """

    __slots__ = ("body_size", "flags", "offsets", "shapes", "variable_header")

    def __init__(self, shapes: Sequence[SignalShape]) -> None:
        self.shapes = tuple(shapes)
        self.flags = 0
        for shape in self.shapes:
            self.flags |= shape.flag
        self.variable_header = struct.pack(
            f"<{2 * len(self.shapes)}H",
            *[s.channels for s in self.shapes],
            *[s.block_size for s in self.shapes],
        )
        offsets = []
        offset = len(self.variable_header)
        for shape in self.shapes:
            offsets.append(offset)
            offset += shape.sample_bytes
        self.offsets = tuple(offsets)
        self.body_size = offset


class BodyLayout:
    """Encodes packet bodies (variable header + samples) for a fixed set of signals.

    A server's signals never change while it runs, so everything but the
    samples is validated and computed once, here: the wire order, each
    signal's shape, the variable header of every combination of present
    signals (an aperiodic signal comes and goes). Per packet, ``encode`` only
    joins the variable header and the blocks' bytes, one copy in all.

    ``sample_order`` (``SAMPLE_ORDERS``) is the layout of the samples inside
    each signal; blocks are always given as (channels, block size).
    """

    def __init__(self, shapes: Sequence[SignalShape], sample_order: str = "channel-major") -> None:
        sample_major = is_sample_major(sample_order)
        seen = 0
        for shape in shapes:
            flag = shape.flag
            if flag <= 0 or flag > 0xFFFFFFFF or flag & (flag - 1) or flag & seen:
                raise ValueError(f"signal flag 0x{flag:x} is not a single, unique bit")
            if flag < seen:
                raise ValueError("signals must be given in ascending flag order (the wire order)")
            if not 0 < shape.channels <= 0xFFFF or not 0 < shape.block_size <= 0xFFFF:
                raise ValueError(
                    f"signal 0x{flag:x} has the block shape ({shape.channels}, {shape.block_size}): "
                    "1..65535 channels x 1..65535 samples"
                )
            seen |= flag
        self.shapes = tuple(shapes)
        self.sample_order = sample_order
        self._sample_major = sample_major
        self._present: dict[int, PresentSignals] = {}
        self.complete = self.present(seen)

    @property
    def max_packet_size(self) -> int:
        """Bytes of a packet holding every signal."""
        return FIXED_HEADER_SIZE + self.complete.body_size

    def present(self, flags: int) -> PresentSignals:
        """The layout of a packet holding the signals in ``flags`` (a subset of this layout's)."""
        found = self._present.get(flags)
        if found is None:
            found = PresentSignals([s for s in self.shapes if s.flag & flags])
            if found.flags != flags:
                raise ValueError(f"flags 0x{flags:x} name signals this layout does not have")
            self._present[flags] = found
        return found

    def encode(self, blocks: Sequence[SampleArray | None]) -> tuple[PresentSignals, bytes]:
        """The body of a packet: ``blocks[i]`` is the (channels, block size) float32 block of
        signal ``i`` of ``shapes``, or None when that signal is absent from this packet.

        The blocks' shapes are not checked again (the server checked its
        sources' blocks as they were read); a block that is not contiguous,
        not little-endian float32 or not in the wire's sample order is
        converted here.
        """
        flags = 0
        parts: list[Any] = []  # arrays are buffers to bytes.join; numpy's stubs do not say so
        for shape, block in zip(self.shapes, blocks, strict=True):
            if block is None:
                continue
            flags |= shape.flag
            if self._sample_major:
                block = block.T
            if not (block.flags.c_contiguous and block.dtype == np.float32 and _LITTLE_ENDIAN):
                block = np.ascontiguousarray(block, dtype=SAMPLE_DTYPE)
            parts.append(block)
        present = self._present.get(flags) or self.present(flags)
        return present, b"".join([present.variable_header, *parts])

    def blocks(self, present: PresentSignals, body: Buffer) -> tuple[tuple[int, SampleArray], ...]:
        """Read-only (channels, block size) views of the samples in ``body``, by flag, in wire order."""
        views = []
        for shape, offset in zip(present.shapes, present.offsets, strict=True):
            samples = np.frombuffer(body, SAMPLE_DTYPE, shape.channels * shape.block_size, offset)
            if self._sample_major:
                block = samples.reshape(shape.block_size, shape.channels).T
            else:
                block = samples.reshape(shape.channels, shape.block_size)
            views.append((shape.flag, block))
        return tuple(views)


def encode_body(
    blocks: Sequence[tuple[int, npt.ArrayLike]], sample_order: str = "channel-major"
) -> tuple[int, bytes]:
    """Flags and body (variable header + samples) of one packet holding ``blocks``.

    ``blocks`` are (flag, 2-D array channels x block size), in any order. For
    one-off packets (tests, tools); a stream encodes through its ``BodyLayout``.
    """
    arrays: dict[int, SampleArray] = {}
    for flag, block in blocks:
        if flag in arrays:
            raise ValueError(f"signal flag 0x{flag:x} is not a single, unique bit")
        array = np.asarray(block, dtype=SAMPLE_DTYPE)
        if array.ndim != 2:
            raise ValueError(f"block of signal 0x{flag:x} has shape {array.shape}")
        arrays[flag] = array
    flags = sorted(arrays)
    layout = BodyLayout([SignalShape(f, *arrays[f].shape) for f in flags], sample_order)
    present, body = layout.encode([arrays[f] for f in flags])
    return present.flags, body


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


def is_sample_major(sample_order: str) -> bool:
    """Whether ``sample_order`` (one of ``SAMPLE_ORDERS``) is ``sample-major``; ValueError for anything else."""
    if sample_order not in SAMPLE_ORDERS:
        raise ValueError(f"sample order {sample_order!r} is not one of {', '.join(SAMPLE_ORDERS)}")
    return sample_order == "sample-major"


def decode_packet(
    data: bytes, max_size: int = DEFAULT_MAX_PACKET_SIZE, sample_order: str = "channel-major"
) -> DataPacket:
    """Decode exactly one packet (a UDP datagram, or one packet cut from a stream).

    ``sample_order`` (``SAMPLE_ORDERS``) is how the server lays out each
    signal's samples; whichever it is, every signal comes out as a read-only,
    C-contiguous (channels, block size) array. Channel-major samples are
    viewed in place; sample-major ones are transposed into a copy when the
    two orders differ (more than one channel and more than one sample).
    """
    return _decode(data, max_size, is_sample_major(sample_order))


def _decode(data: bytes, max_size: int, sample_major: bool) -> DataPacket:
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
        if sample_major:
            signals[flag] = _channel_major(samples.reshape(block, channels).T)
        else:
            signals[flag] = samples.reshape(channels, block)
        offset += 4 * channels * block
    return DataPacket(packet_id, connection_number, timestamp, flags, signals)


def _channel_major(block: SampleArray) -> SampleArray:
    """``block`` C-contiguous and read-only, like the in-place views of channel-major packets."""
    if block.flags.c_contiguous:  # one channel or one sample: both orders are the same bytes
        return block
    copy = np.ascontiguousarray(block)
    copy.flags.writeable = False
    return copy


class PacketStreamDecoder:
    """Cuts a TCP byte stream into packets. Any invalid header raises ``PacketError``;
    the stream cannot be trusted after that, so the caller drops the connection.

    ``sample_order`` is the server's layout of each signal's samples, as for
    ``decode_packet``; an unknown one is a ValueError here, not per packet.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_PACKET_SIZE, sample_order: str = "channel-major") -> None:
        self.max_size = max_size
        self.sample_order = sample_order
        self._sample_major = is_sample_major(sample_order)
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
                packets.append(_decode(bytes(buffer[offset : offset + size]), self.max_size, self._sample_major))
                offset += size
        except PacketError as error:
            buffer.clear()  # the stream cannot be trusted past this point
            error.packets = packets
            raise
        if offset:
            del buffer[:offset]
        return packets
