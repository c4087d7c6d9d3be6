"""File replay: EDF/EDF+/BDF/BDF+, CSV and NumPy files served in real time (``driver = replay``).

Sample ``k`` of the packet stream is sample ``k`` of the file (modulo its
length with ``on_end = loop``), so a replay is exact and repeatable: the
master clock paces it, and the announced rate is the file's rate times
``speed``. A last partial block is never padded (no invented samples): the
replay ends with the last complete block.

On an ``event`` signal type the same driver replays the EDF+/BDF+
annotations instead: each annotation goes out as an event code in the packet
that covers its onset (several in one packet are spread over consecutive
packets, never dropped). Give that section the same ``file``, ``speed`` and
``on_end`` as the data section so both stay on one time line.

At config time only the header is read (``describe``), so a missing or
malformed file is a config error naming the section; the samples are loaded
into memory (4 bytes per sample and channel) when the server starts.
"""

from __future__ import annotations

import csv
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from twisted.logger import Logger
from zope.interface import implementer

from tia.protocol.packet import SampleArray
from tia.protocol.signals import SignalType, UnknownSignalType, by_name
from tia.sources.base import (
    ChannelSpec,
    ISource,
    OptionError,
    SourceDescription,
    SourceError,
    SourceFinished,
    SourceSpec,
)

log = Logger()

ON_END = ("stop-server", "stop-signal", "loop")
FORMATS = ("auto", "edf", "bdf", "csv", "npy", "npz")
_SUFFIXES = {".edf": "edf", ".bdf": "bdf", ".csv": "csv", ".tsv": "csv", ".txt": "csv", ".npy": "npy", ".npz": "npz"}
# the EDF+ convention "TYPE name" (e.g. "EEG Fp1"): the types TiA has
_EDF_TYPES = {
    "EEG": "eeg", "EMG": "emg", "EOG": "eog", "ECG": "ecg", "EKG": "ecg", "HR": "hr", "BP": "bp", "NIRS": "nirs",
}
# EDF+ prefixes that name no TiA type ("MISC bp1": txtia's recordings of hr, bp, sensor, ...)
_EDF_UNTYPED = ("MISC",)
# txtia's recordings say each channel's TiA type in the transducer field: "TiA bp"
_TIA_TRANSDUCER = "TiA "
_ANNOTATION_LABELS = ("EDF Annotations", "BDF Annotations")


def parse_speed(text: str) -> Fraction:
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ValueError("expected a positive number, e.g. 1 or 2.5") from None
    if value <= 0:
        raise ValueError("expected a positive number, e.g. 1 or 2.5")
    return value


def parse_on_end(text: str) -> str:
    value = text.strip().lower()
    if value not in ON_END:
        raise ValueError(f"expected one of {', '.join(ON_END)}")
    return value


def parse_format(text: str) -> str:
    value = text.strip().lower()
    if value not in FORMATS:
        raise ValueError(f"expected one of {', '.join(FORMATS)}")
    return value


def parse_codes(text: str) -> dict[str, float]:
    """``TEXT=CODE, ...``: event codes of annotation texts."""
    codes: dict[str, float] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, equals, code = item.rpartition("=")
        if not equals or not name.strip():
            raise ValueError(f"{item.strip()!r} is not TEXT=CODE")
        codes[name.strip()] = float(code)
    return codes


def parse_delimiter(text: str) -> str:
    names = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "space": " "}
    value = names.get(text.strip().lower(), text.strip())
    if len(value) != 1:
        raise ValueError("expected one character, or tab, comma, semicolon, space")
    return value


# ---------------------------------------------------------------- what a file holds


@dataclass(frozen=True)
class FileSignal:
    index: int  # position among the data signals / columns / rows
    label: str  # as written in the file
    name: str  # the label without an EDF+ type prefix
    type: SignalType | None  # what the file says, if anything
    rate: Fraction | None


@dataclass(frozen=True)
class FileInfo:
    format: str
    signals: tuple[FileSignal, ...]
    annotations: bool = False
    duration: Fraction | None = None  # seconds, where the file says


def file_format(path: Path, option: str = "auto") -> str:
    if option != "auto":
        return option
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise OptionError("file", f"cannot tell the format of {path.name!r} from its suffix; set format = edf, ...")
    return fmt


def _split_type(label: str, transducer: str = "") -> tuple[str, SignalType | None]:
    """(name, type) of an EDF+ label ``TYPE name``; a transducer ``TiA TYPE`` (ours) says the exact type."""
    word, _, rest = label.partition(" ")
    kind = _EDF_TYPES.get(word.upper())
    name = (rest.strip() or label) if kind is not None or word.upper() in _EDF_UNTYPED else label
    signal_type = by_name(kind) if kind is not None else None
    if transducer.startswith(_TIA_TRANSDUCER):
        try:
            signal_type = by_name(transducer[len(_TIA_TRANSDUCER):])
        except UnknownSignalType:
            pass  # not one of ours after all: the label says what it can
    return name, signal_type


def read_edf_header(path: Path) -> FileInfo:
    """The EDF/BDF header (fixed-width ASCII, per the EDF spec): no sample is read."""
    with open(path, "rb") as handle:
        head = handle.read(256)
        if len(head) < 256:
            raise ValueError(f"{path.name} is not an EDF/BDF file (header shorter than 256 bytes)")
        bdf = head[:1] == b"\xff"
        try:
            count = int(head[252:256].decode("ascii"))
            records = int(head[236:244].decode("ascii"))
            record_text = head[244:252].decode("ascii").strip()
            record_duration = Fraction(record_text)
            reserved = head[192:236].decode("ascii", "replace").strip()
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{path.name} is not an EDF/BDF file (bad header fields)") from None
        fields = handle.read(256 * count)
    if len(fields) < 256 * count:
        raise ValueError(f"{path.name}: header truncated")
    if records < 0:
        raise ValueError(f"{path.name}: number of data records unknown (-1); the recording was not closed")

    def column(offset: int, width: int, index: int) -> str:
        start = offset * count + index * width
        return fields[start : start + width].decode("ascii", "replace").strip()

    signals: list[FileSignal] = []
    annotations = False
    spr_offset = 16 + 80 + 8 * 5 + 80  # label, transducer, dimension, 4 ranges, prefiltering
    for index in range(count):
        label = column(0, 16, index)
        if label in _ANNOTATION_LABELS:
            annotations = True
            continue
        try:
            samples = int(column(spr_offset, 8, index))
        except ValueError:
            raise ValueError(f"{path.name}: signal {label!r} has a bad samples-per-record field") from None
        if record_duration <= 0:
            raise ValueError(f"{path.name}: data record duration is {record_text}")
        name, kind = _split_type(label, column(16, 80, index))
        signals.append(FileSignal(len(signals), label, name, kind, Fraction(samples) / record_duration))
    fmt = "bdf" if bdf else "edf"
    if reserved.endswith("D"):
        log.warn("{file} is {kind}+D (discontinuous): replayed as if continuous", file=path.name, kind=fmt.upper())
    return FileInfo(fmt, tuple(signals), annotations, records * record_duration)


def _csv_header(path: Path, delimiter: str) -> list[str] | None:
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle, delimiter=delimiter):
            if not row or row[0].lstrip().startswith("#"):
                continue
            try:
                [float(cell) for cell in row if cell.strip()]
            except ValueError:
                return [cell.strip() for cell in row]
            return None  # numbers: no header
    raise ValueError(f"{path.name} holds no data")


def read_info(path: Path, fmt: str, delimiter: str = ",") -> FileInfo:
    """Labels, types and rates of a file's signals, without loading its samples."""
    if fmt in ("edf", "bdf"):
        return read_edf_header(path)
    if fmt == "csv":
        header = _csv_header(path, delimiter)
        if header is None:
            with open(path, encoding="utf-8") as handle:
                first = next(line for line in handle if line.strip() and not line.lstrip().startswith("#"))
            header = [f"ch{n}" for n in range(1, len(first.split(delimiter)) + 1)]
        signals: list[FileSignal] = []
        for index, cell in enumerate(header):
            label, colon, kind = cell.rpartition(":")
            if not colon:
                label, kind = kind, ""
            signal_type = by_name(kind) if kind.strip() else None
            signals.append(FileSignal(index, label.strip(), label.strip(), signal_type, None))
        return FileInfo("csv", tuple(signals))
    if fmt == "npy":
        array = np.load(path, mmap_mode="r")
        rows = 1 if array.ndim == 1 else array.shape[0]
        if array.ndim not in (1, 2):
            raise ValueError(f"{path.name}: expected a (channels, samples) array, got shape {array.shape}")
        return FileInfo("npy", tuple(FileSignal(i, f"ch{i + 1}", f"ch{i + 1}", None, None) for i in range(rows)))
    with np.load(path, allow_pickle=False) as archive:
        if "data" not in archive:
            raise ValueError(f"{path.name}: an .npz replay file needs an array named 'data' (channels, samples)")
        shape = archive["data"].shape
        if len(shape) not in (1, 2):
            raise ValueError(f"{path.name}: 'data' must be (channels, samples), got shape {shape}")
        rows = 1 if len(shape) == 1 else shape[0]
        rate = Fraction(str(float(archive["rate"]))) if "rate" in archive else None
        labels = [str(x) for x in archive["labels"]] if "labels" in archive else [f"ch{i + 1}" for i in range(rows)]
        types = [str(x) for x in archive["types"]] if "types" in archive else [""] * rows
    if len(labels) != rows or len(types) != rows:
        raise ValueError(f"{path.name}: 'labels' and 'types' need one entry per row of 'data' ({rows})")
    return FileInfo("npz", tuple(
        FileSignal(i, labels[i], labels[i], by_name(types[i]) if types[i] else None, rate) for i in range(rows)
    ))


def _positional(info: FileInfo) -> bool:
    """A file without labels of its own (.npy, .npz without 'labels'): channels map by position."""
    return info.format == "npy" or (
        info.format == "npz" and all(s.label == f"ch{s.index + 1}" for s in info.signals)
    )


def _select(info: FileInfo, labels: Sequence[str], path: Path) -> list[FileSignal]:
    """The file signals the configured channel labels name (case-insensitive, EDF+ prefix optional)."""
    chosen = []
    for label in labels:
        key = label.lower()
        found = [s for s in info.signals if key in (s.label.lower(), s.name.lower())]
        if len(found) > 1:
            found = [s for s in found if s.label.lower() == key] or found
        if not found:
            known = ", ".join(s.label for s in info.signals) or "none"
            raise OptionError("channels", f"{path.name} has no signal {label!r} (it has: {known})")
        if len(found) > 1:
            raise OptionError("channels", f"{path.name} has several signals labelled {label!r}")
        chosen.append(found[0])
    return chosen


def _options(options: Mapping[str, object]) -> tuple[Path, str, Fraction, str, str]:
    path = options.get("file")
    if not isinstance(path, Path):
        raise OptionError("file", "missing; expected the path of the file to replay")
    fmt = file_format(path, str(options.get("format", "auto")))
    speed = options.get("speed", Fraction(1))
    assert isinstance(speed, Fraction)
    delimiter = str(options.get("delimiter", "\t" if path.suffix.lower() == ".tsv" else ","))
    return path, fmt, speed, str(options.get("on_end", "stop-server")), delimiter


def describe(
    options: Mapping[str, object], channels: tuple[ChannelSpec, ...] | None, default_type: SignalType | None
) -> SourceDescription:
    """Config time: the rate and channels of the file, checked against what the section says."""
    path, fmt, speed, _, delimiter = _options(options)
    if fmt in ("edf", "bdf"):
        try:
            import edfio  # noqa: F401  (needed at start; say so now)
        except ImportError:
            raise OptionError("file", "replaying EDF/BDF needs edfio: pip install 'txtia[sources]'") from None
    try:
        info = read_info(path, fmt, delimiter)
    except FileNotFoundError:
        raise OptionError("file", f"{path}: no such file") from None
    except (OSError, ValueError, StopIteration) as error:
        raise OptionError("file", f"{path}: {error}") from None
    if channels is not None and channels[0].type.aperiodic:
        if not info.annotations:
            raise OptionError("file", f"{path.name} has no EDF+/BDF+ annotations to replay as {channels[0].type.name}")
        if "codes" not in options and any(c.type.name != "event" for c in channels):
            log.info("annotation codes go to {kinds}", kinds=", ".join(c.type.name for c in channels))
        return SourceDescription(None, channels)
    if "codes" in options:
        raise OptionError("codes", "only used on an event channel replaying annotations")
    if channels is not None and _positional(info):
        if len(channels) != len(info.signals):
            raise OptionError(
                "channels", f"{path.name} has {len(info.signals)} rows, the section lists {len(channels)}"
            )
        selected = list(info.signals)
    elif channels is not None:
        selected = _select(info, [c.label for c in channels], path)
    else:
        selected = list(info.signals)
    if not selected:
        raise OptionError("file", f"{path.name} has no data signal")
    rates = {s.rate for s in selected}
    if len(rates) > 1:
        listing = ", ".join(f"{s.label}: {float(s.rate or 0):g} Hz" for s in selected)
        raise OptionError(
            "channels",
            f"the signals of {path.name} have different rates ({listing}); list the channels of one rate "
            "and replay the others in another [source:NAME] section",
        )
    rate = rates.pop()
    if rate is None and speed != 1:
        raise OptionError("speed", f"{path.name} has no rate of its own: set rate (the replay rate) instead")
    if channels is None:
        specs = []
        for signal in selected:
            kind = signal.type or default_type
            if kind is None:
                raise OptionError(
                    "type", f"missing; {path.name} does not say the type of {signal.label!r}: set type = eeg "
                    f"(for all) or list channels = {signal.name}:eeg, ..."
                )
            specs.append(ChannelSpec(signal.name, kind))
        channels = tuple(specs)
    return SourceDescription(None if rate is None else rate * speed, channels)


# ---------------------------------------------------------------- the source


def _load(path: Path, fmt: str, delimiter: str, rows: Sequence[int]) -> tuple[SampleArray, Any]:
    """(channels, samples) float32 of the chosen rows, and the edfio recording if any."""
    if fmt in ("edf", "bdf"):
        import edfio

        recording = edfio.read_edf(path) if fmt == "edf" else edfio.read_bdf(path)
        signals = recording.signals
        data = np.stack([np.asarray(signals[i].data, dtype=np.float32) for i in rows]) if rows else None
        return (data if data is not None else np.zeros((0, 0), np.float32)), recording
    if fmt == "csv":
        header = _csv_header(path, delimiter)
        table = np.loadtxt(path, delimiter=delimiter, skiprows=0 if header is None else 1, ndmin=2,
                           dtype=np.float64, comments="#")
        array = table.T
    elif fmt == "npy":
        array = np.atleast_2d(np.load(path))
    else:
        with np.load(path, allow_pickle=False) as archive:
            array = np.atleast_2d(archive["data"])
    return np.ascontiguousarray(array[list(rows)], dtype=np.float32), None


def annotation_codes(texts: Sequence[str], mapping: Mapping[str, float]) -> dict[str, float]:
    """Numbers stand for themselves, ``codes`` maps texts; others get 1, 2, ... in sorted order."""
    codes: dict[str, float] = {}
    for text in set(texts):
        if text in mapping:
            codes[text] = mapping[text]
            continue
        try:
            codes[text] = float(text)
        except ValueError:
            pass
    used = set(codes.values())
    number = 1.0
    for text in sorted(set(texts) - set(codes)):
        while number in used:
            number += 1
        codes[text] = number
        used.add(number)
    return codes


@implementer(ISource)
class ReplaySource:
    """Samples (or annotations) of a file, block ``t`` = file samples ``t * B`` .. ``(t + 1) * B - 1``."""

    device_clocked = False

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.path, self.format, self.speed, self.on_end, self.delimiter = _options(spec.options)
        self._mapping: dict[str, float] = dict(spec.options.get("codes", {}))  # type: ignore[call-overload]
        self._data: SampleArray | None = None
        self._events: list[tuple[Fraction, float]] = []
        self._duration = Fraction(0)
        self._pending: deque[float] = deque()
        self._next = 0  # index of the next annotation in _events, over all loops

    def start(self) -> None:
        try:
            self._open()
        except SourceError:
            raise
        except Exception as error:
            raise SourceError(f"source [{self.spec.name}]: cannot replay {self.path}: {error}") from error

    def _open(self) -> None:
        info = read_info(self.path, self.format, self.delimiter)
        self._pending.clear()
        self._next = 0
        if self.spec.aperiodic:
            _, recording = _load(self.path, self.format, self.delimiter, [])
            annotations = [a for a in recording.annotations if a.text.strip()]
            codes = annotation_codes([a.text.strip() for a in annotations], self._mapping)
            self._events = [(Fraction(str(a.onset)), codes[a.text.strip()]) for a in annotations]
            self._duration = info.duration or Fraction(0)
            if self.on_end == "loop" and self._duration <= 0:
                raise SourceError(f"source [{self.spec.name}]: {self.path.name} has no duration to loop over")
            log.info(
                "source [{name}] replays {count} annotations of {file} as {kind} codes: {codes}",
                name=self.spec.name, count=len(self._events), file=self.path.name,
                kind=self.spec.channels[0].type.name,
                codes=", ".join(f"{text!r}={code:g}" for text, code in sorted(codes.items(), key=lambda x: x[1])),
            )
            return
        if _positional(info):
            rows = list(range(len(self.spec.channels)))
        else:
            rows = [s.index for s in _select(info, [c.label for c in self.spec.channels], self.path)]
        data, _ = _load(self.path, self.format, self.delimiter, rows)
        if data.shape[1] < self.spec.block_size:
            raise SourceError(
                f"source [{self.spec.name}]: {self.path.name} holds {data.shape[1]} samples, "
                f"less than one block ({self.spec.block_size})"
            )
        self._data = data
        log.info(
            "source [{name}] replays {file}: {channels} channels, {samples} samples ({seconds:.1f} s) at "
            "{rate:g} Hz, on_end = {on_end}", name=self.spec.name, file=self.path.name,
            channels=data.shape[0], samples=data.shape[1],
            seconds=data.shape[1] / float(self.spec.sampling_rate) * float(self.speed),
            rate=float(self.spec.sampling_rate), on_end=self.on_end,
        )

    def stop(self) -> None:
        self._data = None

    def read(self, tick: int) -> SampleArray | None:
        if self.spec.aperiodic:
            return self._read_event(tick)
        data = self._data
        if data is None:
            raise SourceError(f"source [{self.spec.name}] is not started")
        block = self.spec.block_size
        total = data.shape[1]
        first = tick * block
        if self.on_end != "loop":
            if first + block > total:
                self._finish(f"end of {self.path.name} after {total // block * block} samples")
            return data[:, first : first + block].copy()
        start = first % total
        if start + block <= total:
            return data[:, start : start + block].copy()
        return np.ascontiguousarray(np.take(data, np.arange(start, start + block) % total, axis=1))

    def _tick_of(self, index: int) -> int:
        """The tick whose packet covers annotation ``index`` (counted over all loops)."""
        loop, position = divmod(index, len(self._events))
        onset = self._events[position][0] + loop * self._duration
        return math.floor(onset / self.speed * self.spec.sampling_rate)

    def _read_event(self, tick: int) -> SampleArray | None:
        count = len(self._events)
        while count and (self.on_end == "loop" or self._next < count) and self._tick_of(self._next) <= tick:
            self._pending.append(self._events[self._next % count][1])
            self._next += 1
        if self._pending:
            return np.full((len(self.spec.channels), 1), self._pending.popleft(), dtype=np.float32)
        end = math.ceil(self._duration / self.speed * self.spec.sampling_rate)
        if self.on_end != "loop" and self._next >= count and tick >= end:
            self._finish(f"end of the annotations of {self.path.name}")
        return None

    def _finish(self, reason: str) -> None:
        raise SourceFinished(reason, stop_server=self.on_end == "stop-server")
