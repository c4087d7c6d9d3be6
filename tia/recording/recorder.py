"""Packets of one TiA stream, gathered for writing: samples per signal, events, and what is missing.

A :class:`Recorder` is built from the server's :class:`MetaInfo` and fed
packets as they arrive, either the blocking client's ``TiAPacket`` or the
core's :class:`DataPacket` (``tia record``, or a server recording's journal
read back). :func:`tia.recording.writers.write_recording` then writes it as
NumPy, CSV, EDF+ or BDF+.

Periodic signals become continuous arrays (channels x samples), one per
signal, indexed from the first packet received. Aperiodic signals (button,
axis, keycode, mouse-button, event) become time-stamped events on the
master's sample grid. Missing packets are never filled in silently: they are
counted as :class:`Gap` objects and read back as NaN.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import numpy as np
import numpy.typing as npt

from tia.protocol.metainfo import MetaInfo, SignalInfo
from tia.protocol.packet import DataPacket, SampleArray
from tia.protocol.signals import flags_in

__all__ = ["Event", "Gap", "PacketLike", "Recorder", "RecordingError", "exact_rate"]

# Aperiodic types whose packets carry a state (every channel, sent when any
# changed): only the channels that changed become events. The "event" type
# carries occurrences: every value is an event.
_OCCURRENCE_TYPES = frozenset({"event"})


class RecordingError(ValueError):
    """Packets that do not fit the metainfo, or a recording that cannot be written."""


class PacketLike(Protocol):
    """What the blocking client's ``TiAPacket`` offers; the recorder needs no more."""

    @property
    def packet_id(self) -> int: ...

    @property
    def packet_number(self) -> int: ...

    @property
    def timestamp(self) -> int: ...

    @property
    def flags(self) -> int: ...

    @property
    def arrays(self) -> Sequence[SampleArray]: ...


@dataclass(frozen=True)
class Gap:
    """Missing data: ``count`` packets from ``packet_id`` on.

    ``signal`` is None when whole packets are missing (their connection
    packet numbers and ids were skipped), else the name of a periodic signal
    that was absent from packets that did arrive. ``connection_missing`` is
    how many connection packet numbers were skipped (usually ``count``).
    """

    packet_id: int
    count: int
    signal: str | None = None
    connection_missing: int = 0

    def describe(self, period: Fraction) -> str:
        """One line for the user: what is missing, where, and how it is stored."""
        seconds = float(self.count * period)
        what = "packets" if self.signal is None else f"blocks of signal {self.signal}"
        numbers = ""
        if self.signal is None and self.connection_missing != self.count:
            numbers = f", {self.connection_missing} connection packet numbers skipped"
        return (
            f"gap: {self.count} {what} missing from packet id {self.packet_id}"
            f" ({seconds:.3f} s{numbers}); stored as NaN"
        )


@dataclass(frozen=True)
class Event:
    """One value of an aperiodic signal.

    ``sample`` counts master samples from the start of the recording
    (``(packet_id - first_packet_id) * master block size`` plus the position
    in the block), so ``sample / master rate`` is its time in seconds.
    """

    sample: int
    packet_id: int
    signal: str
    label: str
    value: float


def exact_rate(value: float) -> Fraction:
    """A rate as an exact fraction (what TiA's floating-point rates stand for)."""
    return Fraction(value).limit_denominator(1_000_000)


def _unpack(packet: DataPacket | PacketLike) -> tuple[int, int, int, dict[int, SampleArray]]:
    if isinstance(packet, DataPacket):
        return (
            packet.packet_id,
            packet.connection_number,
            packet.timestamp,
            dict(packet.signals),
        )
    flags = flags_in(packet.flags)
    if len(flags) != len(packet.arrays):
        raise RecordingError(
            f"packet {packet.packet_id} has {len(packet.arrays)} sample blocks"
            f" but {len(flags)} signal flags"
        )
    return (
        packet.packet_id,
        packet.packet_number,
        packet.timestamp,
        dict(zip(flags, packet.arrays, strict=True)),
    )


class Recorder:
    """Accumulates packets of one stream; :func:`~tia.recording.writers.write_recording` saves them.

    Feed packets in arrival order with :meth:`feed`; it returns the gaps it
    just detected so the caller can report them at once. Memory grows with
    the recording (the samples are kept until written).
    """

    def __init__(self, metainfo: MetaInfo) -> None:
        self.metainfo = metainfo
        self.periodic = tuple(s for s in metainfo.signals if not s.type.aperiodic)
        self.aperiodic = tuple(s for s in metainfo.signals if s.type.aperiodic)
        self.master_rate = exact_rate(metainfo.master_sampling_rate)
        self.master_block_size = metainfo.master_block_size
        # Every periodic signal covers this much time per packet (SPEC section 3).
        self.packet_period = Fraction(self.master_block_size) / self.master_rate
        self.first_packet_id: int | None = None
        self.start_time: datetime.datetime | None = None
        self.gaps: list[Gap] = []
        self.events: list[Event] = []
        self.packet_ids: list[int] = []
        self.connection_numbers: list[int] = []
        self.timestamps: list[int] = []
        self._blocks: dict[int, list[tuple[int, SampleArray]]] = {
            s.flag: [] for s in self.periodic
        }
        self._known = {s.flag: s for s in metainfo.signals}
        self._state: dict[int, npt.NDArray[np.float32]] = {}
        self._signal_gap: dict[int, int] = {}

    # -- feeding ------------------------------------------------------------

    def feed(self, packet: DataPacket | PacketLike) -> list[Gap]:
        """Add one packet; returns the gaps first seen with it (usually none)."""
        packet_id, number, timestamp, blocks = _unpack(packet)
        for flag, block in blocks.items():
            self._check_block(packet_id, flag, block)
        new_gaps: list[Gap] = []
        if self.first_packet_id is None:
            self.first_packet_id = packet_id
            self.start_time = datetime.datetime.now()
        else:
            last_id, last_number = self.packet_ids[-1], self.connection_numbers[-1]
            if packet_id <= last_id:
                raise RecordingError(
                    f"packet id went back from {last_id} to {packet_id}: not one stream"
                )
            missing = packet_id - last_id - 1
            skipped = max(0, number - last_number - 1)
            if missing or skipped:
                gap = Gap(last_id + 1, missing, None, skipped)
                self.gaps.append(gap)
                new_gaps.append(gap)
        self.packet_ids.append(packet_id)
        self.connection_numbers.append(number)
        self.timestamps.append(timestamp)
        index = packet_id - self.first_packet_id
        for signal in self.periodic:
            present = blocks.get(signal.flag)
            if present is None:
                started = self._signal_missing(signal, packet_id)
                if started is not None:
                    new_gaps.append(started)
            else:
                self._signal_gap.pop(signal.flag, None)
                self._blocks[signal.flag].append((index, np.array(present, dtype=np.float32)))
        for signal in self.aperiodic:
            present = blocks.get(signal.flag)
            if present is not None:
                self._add_events(signal, index, packet_id, np.asarray(present, dtype=np.float32))
        return new_gaps

    def _check_block(self, packet_id: int, flag: int, block: SampleArray) -> None:
        signal = self._known.get(flag)
        if signal is None:
            raise RecordingError(
                f"packet {packet_id} carries signal flag 0x{flag:06x}, absent from the metainfo"
            )
        expected_block = None if signal.type.aperiodic else signal.block_size
        if block.ndim != 2 or block.shape[0] != signal.num_channels or (
            expected_block is not None and block.shape[1] != expected_block
        ):
            raise RecordingError(
                f"packet {packet_id}: signal {signal.type.name} has shape {block.shape},"
                f" the metainfo says {signal.num_channels} channels x {signal.block_size}"
            )

    def _signal_missing(self, signal: SignalInfo, packet_id: int) -> Gap | None:
        """Count a periodic signal absent from a packet; a new Gap only when it starts."""
        position = self._signal_gap.get(signal.flag)
        if position is not None:
            gap = self.gaps[position]
            if gap.packet_id + gap.count == packet_id:
                self.gaps[position] = Gap(gap.packet_id, gap.count + 1, gap.signal)
                return None
        self._signal_gap[signal.flag] = len(self.gaps)
        gap = Gap(packet_id, 1, signal.type.name)
        self.gaps.append(gap)
        return gap

    def _add_events(
        self, signal: SignalInfo, index: int, packet_id: int, block: npt.NDArray[np.float32]
    ) -> None:
        names = signal.channel_names
        width = block.shape[1]
        occurrences = signal.type.name in _OCCURRENCE_TYPES
        previous = self._state.get(signal.flag)
        for position in range(width):
            sample = index * self.master_block_size + position * self.master_block_size // width
            values = block[:, position]
            for channel, value in enumerate(values):
                if (
                    not occurrences
                    and previous is not None
                    and _same(float(previous[channel]), float(value))
                ):
                    continue
                self.events.append(
                    Event(sample, packet_id, signal.type.name, names[channel], float(value))
                )
            previous = values.copy()
        self._state[signal.flag] = previous if previous is not None else block[:, -1].copy()

    # -- results ------------------------------------------------------------

    @property
    def packets_received(self) -> int:
        return len(self.packet_ids)

    @property
    def packet_span(self) -> int:
        """Packets from the first to the last received, missing ones included."""
        if self.first_packet_id is None:
            return 0
        return self.packet_ids[-1] - self.first_packet_id + 1

    @property
    def missing_packets(self) -> int:
        return sum(g.count for g in self.gaps if g.signal is None)

    @property
    def missing_blocks(self) -> int:
        """Blocks of periodic signals absent from packets that did arrive."""
        return sum(g.count for g in self.gaps if g.signal is not None)

    @property
    def duration(self) -> float:
        """Seconds covered, gaps included."""
        return float(self.packet_span * self.packet_period)

    def signal_data(self, signal: SignalInfo | str, pad_packets: int = 0) -> SampleArray:
        """A periodic signal as float32 (channels x samples), NaN where data is missing."""
        info = signal if isinstance(signal, SignalInfo) else self.metainfo.signal(signal)
        if info.type.aperiodic:
            raise RecordingError(f"{info.type.name} is aperiodic: see events")
        block = info.block_size
        data = np.full(
            (info.num_channels, (self.packet_span + pad_packets) * block), np.nan, np.float32
        )
        for index, samples in self._blocks[info.flag]:
            data[:, index * block : (index + 1) * block] = samples
        return data

    def event_array(self) -> npt.NDArray[np.void]:
        """The events as one structured array (no objects: loads without pickle)."""
        label_width = max([1, *(len(e.label) for e in self.events)])
        dtype = np.dtype(
            [
                ("sample", "<i8"),
                ("time_s", "<f8"),
                ("packet_id", "<i8"),
                ("signal", "<U16"),
                ("label", f"<U{label_width}"),
                ("value", "<f8"),
            ]
        )
        rate = float(self.master_rate)
        return np.array(
            [(e.sample, e.sample / rate, e.packet_id, e.signal, e.label, e.value)
             for e in self.events],
            dtype=dtype,
        )


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))
