"""Recording a TiA stream to files: packets in, NumPy / CSV / EDF / BDF out.

Kept apart from the CLI so that anything holding packets (the ``tia record``
command, a future server-side recorder) records the same way. A
:class:`Recorder` is built from the server's :class:`MetaInfo` and fed
packets as they arrive, either the blocking client's ``TiAPacket`` or the
core's :class:`DataPacket`. Then :meth:`Recorder.write` picks the writer by
the file suffix.

Periodic signals become continuous arrays (channels x samples), one per
signal, indexed from the first packet received. Aperiodic signals (button,
axis, keycode, mouse-button, event) become time-stamped events on the
master's sample grid. Missing packets are never filled in silently. They are
counted as :class:`Gap` objects, stored as NaN in NumPy and CSV, and in EDF/BDF
(which cannot hold NaN) written as the signal's physical minimum and covered
by a ``BAD_ACQ_SKIP`` annotation, which MNE skips by default.
"""

from __future__ import annotations

import csv
import datetime
import io
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from tia.protocol.metainfo import MetaInfo, SignalInfo
from tia.protocol.packet import DataPacket, SampleArray
from tia.protocol.signals import flags_in

if TYPE_CHECKING:
    from edfio import BdfSignal, EdfSignal

__all__ = [
    "SUFFIXES",
    "Event",
    "Gap",
    "PacketLike",
    "Recorder",
    "RecordingError",
    "channel_names",
    "check_writable",
    "physical_unit",
]

SUFFIXES = (".npz", ".csv", ".edf", ".bdf")

# Physical dimensions written to EDF/BDF and stored beside the NumPy arrays.
# TiA carries no units; these are what amplifiers behind TiA servers send.
_UNITS = {
    "eeg": "uV",
    "emg": "uV",
    "eog": "uV",
    "ecg": "uV",
    "hr": "bpm",
    "bp": "mmHg",
}
# Aperiodic types whose packets carry a state (every channel, sent when any
# changed): only the channels that changed become events. The "event" type
# carries occurrences: every value is an event.
_OCCURRENCE_TYPES = frozenset({"event"})

_EDF_DIGITAL = (-32768, 32767)
_BDF_DIGITAL = (-8388608, 8388607)
_EDF_LABEL_LENGTH = 16
_GAP_ANNOTATION = "BAD_ACQ_SKIP"
# Longest search for a data-record length (in packets) before giving up.
_MAX_RECORD_PACKETS = 100_000


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


def channel_names(signal: SignalInfo) -> list[str]:
    """The channels' labels, unlabelled ones named after the type (``eeg3``)."""
    return [
        label if label else f"{signal.type.name}{number}"
        for number, label in enumerate(signal.labels, start=1)
    ]


def physical_unit(signal: SignalInfo) -> str:
    """The unit we assume for a signal type; empty when TiA gives no hint."""
    return _UNITS.get(signal.type.name, "")


def check_writable(path: str | Path) -> None:
    """Refuse an unknown suffix, or EDF/BDF without edfio, before anything is recorded."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise RecordingError(
            f"cannot tell the format of {str(path)!r}: use one of {', '.join(SUFFIXES)}"
        )
    if suffix in (".edf", ".bdf"):
        _edfio()


def _edfio() -> Any:
    try:
        import edfio
    except ImportError:
        raise RecordingError(
            "writing EDF/BDF needs the edfio package: pip install 'txtia[record]'"
        ) from None
    return edfio


def _rate(value: float) -> Fraction:
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
    """Accumulates packets of one stream; ``write(path)`` saves them.

    Feed packets in arrival order with :meth:`feed`; it returns the gaps it
    just detected so the caller can report them at once. Memory grows with
    the recording (the samples are kept until written).
    """

    def __init__(self, metainfo: MetaInfo) -> None:
        self.metainfo = metainfo
        self.periodic = tuple(s for s in metainfo.signals if not s.type.aperiodic)
        self.aperiodic = tuple(s for s in metainfo.signals if s.type.aperiodic)
        self.master_rate = _rate(metainfo.master_sampling_rate)
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
        names = channel_names(signal)
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

    # -- writing ------------------------------------------------------------

    def write(self, path: str | Path) -> list[Path]:
        """Write the recording in the format the suffix names; returns the files written."""
        target = Path(path)
        check_writable(target)
        if self.first_packet_id is None:
            raise RecordingError("nothing to write: no packet was recorded")
        writers: dict[str, Callable[[Path], list[Path]]] = {
            ".npz": self._write_npz,
            ".csv": self._write_csv,
            ".edf": lambda p: self._write_edf(p, bdf=False),
            ".bdf": lambda p: self._write_edf(p, bdf=True),
        }
        return writers[target.suffix.lower()](target)

    def _write_npz(self, path: Path) -> list[Path]:
        arrays: dict[str, Any] = {}
        for signal in self.periodic:
            name = signal.type.name
            arrays[name] = self.signal_data(signal)
            arrays[f"{name}_labels"] = np.array(channel_names(signal), dtype=str)
            arrays[f"{name}_rate"] = np.float64(signal.sampling_rate)
            arrays[f"{name}_unit"] = np.str_(physical_unit(signal))
        arrays["events"] = self.event_array()
        arrays["packet_ids"] = np.array(self.packet_ids, dtype=np.int64)
        arrays["connection_numbers"] = np.array(self.connection_numbers, dtype=np.int64)
        arrays["timestamps"] = np.array(self.timestamps, dtype=np.uint64)
        arrays["gaps"] = np.array(
            [(g.packet_id, g.count, g.signal or "") for g in self.gaps],
            dtype=[("packet_id", "<i8"), ("count", "<i8"), ("signal", "<U16")],
        )
        arrays["first_packet_id"] = np.int64(self.first_packet_id or 0)
        arrays["master_rate"] = np.float64(self.metainfo.master_sampling_rate)
        arrays["master_block_size"] = np.int64(self.master_block_size)
        arrays["subject_id"] = np.str_(self.metainfo.subject.id)
        arrays["start_time"] = np.str_(self.start_time.isoformat() if self.start_time else "")
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
        return [path]

    def _write_csv(self, path: Path) -> list[Path]:
        master = _rate(self.metainfo.master_sampling_rate)
        main = [s for s in self.periodic if _rate(s.sampling_rate) == master]
        others = [s for s in self.periodic if _rate(s.sampling_rate) != master]
        written = [path]
        _write_signal_csv(path, main, [self.signal_data(s) for s in main], master)
        for signal in others:
            extra = path.with_name(f"{path.stem}_{signal.type.name}{path.suffix}")
            _write_signal_csv(
                extra, [signal], [self.signal_data(signal)], _rate(signal.sampling_rate)
            )
            written.append(extra)
        if self.aperiodic:
            events_path = path.with_name(f"{path.stem}_events{path.suffix}")
            rate = float(self.master_rate)
            with open(events_path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["time_s", "sample", "packet_id", "signal", "label", "value"])
                for e in self.events:
                    writer.writerow(
                        [repr(e.sample / rate), e.sample, e.packet_id, e.signal, e.label,
                         f"{e.value:.9g}"]
                    )
            written.append(events_path)
        return written

    def _write_edf(self, path: Path, bdf: bool) -> list[Path]:
        edfio = _edfio()
        if not self.periodic:
            raise RecordingError("EDF/BDF needs at least one periodic signal")
        per_record, padding = _record_layout(self.packet_span, self.packet_period)
        signal_class = edfio.BdfSignal if bdf else edfio.EdfSignal
        digital = _BDF_DIGITAL if bdf else _EDF_DIGITAL
        labels = _edf_labels(self.periodic)
        signals = []
        for signal in self.periodic:
            data = self.signal_data(signal, padding).astype(np.float64)
            for channel, label in enumerate(labels[signal.flag]):
                try:
                    signals.append(
                        _edf_signal(
                            signal_class, data[channel], signal, label, digital
                        )
                    )
                except ValueError as error:
                    raise RecordingError(f"channel {label}: {error}") from None
        annotations = self._annotations(edfio.EdfAnnotation, padding)
        start = self.start_time or datetime.datetime.now()
        subject = self.metainfo.subject
        name = "_".join(p for p in (subject.surname, subject.first_name) if p)
        file_class = edfio.Bdf if bdf else edfio.Edf
        try:
            document = file_class(
                signals,
                patient=edfio.Patient(code=_edf_field(subject.id), name=_edf_field(name)),
                recording=edfio.Recording(startdate=start.date(), equipment_code="TiA"),
                starttime=start.time().replace(microsecond=0),
                data_record_duration=float(per_record * self.packet_period),
                annotations=annotations,
            )
            document.write(path)
        except ValueError as error:
            raise RecordingError(f"cannot write {path}: {error}") from None
        return [path]

    def _annotations(self, annotation: Any, padding: int) -> list[Any]:
        first = self.first_packet_id or 0
        rate = self.master_rate
        period = self.packet_period
        result = [
            annotation(float(Fraction(e.sample) / rate), None, f"{e.label}={e.value:g}")
            for e in self.events
        ]
        for gap in self.gaps:
            text = _GAP_ANNOTATION if gap.signal is None else f"{_GAP_ANNOTATION} {gap.signal}"
            result.append(
                annotation(
                    float((gap.packet_id - first) * period), float(gap.count * period), text
                )
            )
        if padding:
            result.append(
                annotation(
                    float(self.packet_span * period),
                    float(padding * period),
                    f"{_GAP_ANNOTATION} padding",
                )
            )
        return sorted(result, key=lambda a: a.onset)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _time_format(rate: Fraction) -> str:
    """Enough decimals to write every sample time exactly when 1/rate terminates."""
    for decimals in range(10):
        if (Fraction(10**decimals) / rate).denominator == 1:
            return f"%.{decimals}f"
    return "%.9f"


def _write_signal_csv(
    path: Path, signals: Sequence[SignalInfo], data: Sequence[SampleArray], rate: Fraction
) -> None:
    header = ["time_s"]
    for signal in signals:
        header.extend(f"{signal.type.name}:{label}" for label in channel_names(signal))
    columns = np.vstack(data).T if data else np.zeros((0, 0), np.float32)
    samples = columns.shape[0]
    times = np.arange(samples, dtype=np.float64) / float(rate)
    table = np.column_stack([times, columns.astype(np.float64)])
    line = io.StringIO()
    csv.writer(line, lineterminator="").writerow(header)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        np.savetxt(
            handle,
            table,
            fmt=[_time_format(rate)] + ["%.9g"] * columns.shape[1],
            delimiter=",",
            header=line.getvalue(),
            comments="",
        )


def _edf_text(text: str) -> str:
    """ASCII for EDF header fields: accents dropped, anything else replaced."""
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_text = decomposed.encode("ascii", "ignore").decode("ascii")
    return "".join(c if " " <= c <= "~" else "_" for c in ascii_text)


def _edf_field(text: str) -> str:
    """An EDF+ patient subfield: no spaces, 'X' when unknown."""
    cleaned = re.sub(r"\s+", "_", _edf_text(text).strip())
    return cleaned or "X"


def _edf_labels(signals: Sequence[SignalInfo]) -> dict[int, list[str]]:
    """Unique 16-character ASCII labels; the TiA label itself whenever it fits."""
    used: set[str] = set()
    result: dict[int, list[str]] = {}
    for signal in signals:
        labels = []
        for number, name in enumerate(channel_names(signal), start=1):
            label = _edf_text(name).strip()[:_EDF_LABEL_LENGTH] or f"{signal.type.name}{number}"
            if label in used:
                label = f"{signal.type.name} {label}"[:_EDF_LABEL_LENGTH]
            suffix = 2
            base = label
            while label in used:
                tail = f"-{suffix}"
                label = base[: _EDF_LABEL_LENGTH - len(tail)] + tail
                suffix += 1
            used.add(label)
            labels.append(label)
        result[signal.flag] = labels
    return result


def _edf_signal(
    signal_class: type[EdfSignal] | type[BdfSignal],
    samples: npt.NDArray[np.float64],
    signal: SignalInfo,
    label: str,
    digital: tuple[int, int],
) -> EdfSignal | BdfSignal:
    """One channel, physical range from its data; missing samples at the physical minimum."""
    finite = np.isfinite(samples)
    if finite.any():
        low, high = float(samples[finite].min()), float(samples[finite].max())
    else:
        low, high = -1.0, 1.0
    if low == high:
        low, high = low - 1.0, high + 1.0
    if not finite.all():
        # Reserve the bottom few digital steps for the missing samples, so that
        # no real sample reads back as the fill value.
        low -= 4 * (high - low) / (digital[1] - digital[0])
        samples = np.where(finite, samples, low)
    return signal_class(
        samples,
        float(signal.sampling_rate),
        label=label,
        transducer_type=f"TiA {signal.type.name}",
        physical_dimension=physical_unit(signal),
        physical_range=(low, high),
        digital_range=digital,
    )


def _record_duration_ok(duration: Fraction) -> bool:
    """Whether the EDF header's 8 characters hold this data-record duration exactly."""
    text = str(float(duration))
    return len(text) <= 8 and Fraction(text) == duration


def _record_layout(packets: int, period: Fraction) -> tuple[int, int]:
    """(packets per data record, packets of padding at the end) for an EDF file.

    Records are a whole number of packets, so every periodic signal has a
    whole number of samples per record whatever its rate. Prefer the longest
    record up to 1 s that divides the recording exactly; then a longer one;
    only when none exists, pad the end (the padding is annotated as a gap).
    """
    if packets <= 0:
        raise RecordingError("nothing to write: no packet was recorded")
    one_second = max(1, math.floor(1 / period))
    candidates = [k for k in range(1, min(packets, _MAX_RECORD_PACKETS) + 1) if packets % k == 0]
    short = [k for k in candidates if k <= one_second and _record_duration_ok(k * period)]
    if short:
        return short[-1], 0
    longer = [k for k in candidates if _record_duration_ok(k * period)]
    if longer:
        return longer[0], 0
    for k in range(1, _MAX_RECORD_PACKETS + 1):
        if _record_duration_ok(k * period):
            return k, (-packets) % k
    raise RecordingError(
        f"no EDF data-record duration fits a packet period of {float(period)} s"
    )
