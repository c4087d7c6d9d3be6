"""A recording written to files: NumPy (.npz), CSV, EDF+ or BDF+, chosen by the file's suffix.

``tia record`` and the conversion of a server recording's journal both end
in :func:`write_recording`, so a file looks the same whichever wrote it.
NumPy and CSV keep float32 samples and NaN where data is missing. EDF/BDF
cannot hold NaN: a missing sample is written as its channel's physical
minimum and covered by a ``BAD_ACQ_SKIP`` annotation, which MNE skips by
default; events become annotations on their sample. Channel labels carry
their EDF+ signal type (``EEG Fp1``, ``EOG HEOG``, ``MISC bp1``), so that
``mne.io.read_raw_edf(path, infer_types=True)`` types every channel and names
it as TiA does; the transducer field says the TiA type (``TiA bp``). EDF/BDF
need the optional edfio package (``txtia[record]``), imported only when one
is written.
"""

from __future__ import annotations

import csv
import datetime
import io
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tia.protocol.channels import physical_unit
from tia.protocol.metainfo import SignalInfo, Subject
from tia.protocol.packet import SampleArray
from tia.recording.recorder import Recorder, RecordingError, exact_rate

if TYPE_CHECKING:
    from edfio import BdfSignal, EdfSignal

__all__ = ["SUFFIXES", "check_writable", "seconds_format", "write_recording"]

SUFFIXES = (".npz", ".csv", ".edf", ".bdf")

_EDF_DIGITAL = (-32768, 32767)
_BDF_DIGITAL = (-8388608, 8388607)
_EDF_LABEL_LENGTH = 16
# EDF+ signal types ("EEG Fp1", "ECG II") that MNE's read_raw_edf(infer_types=True) also knows; a TiA type
# EDF+ has no type for (hr, bp, sensor, user1, ...) is MISC, which MNE knows too. The transducer field
# ("TiA bp") keeps the TiA type itself.
_EDF_TYPE_PREFIXES = {"eeg": "EEG", "eog": "EOG", "ecg": "ECG", "emg": "EMG"}
_EDF_OTHER_PREFIX = "MISC"
_TRANSDUCER_PREFIX = "TiA "
_GAP_ANNOTATION = "BAD_ACQ_SKIP"
# Longest search for a data-record length (in packets) before giving up.
_MAX_RECORD_PACKETS = 100_000


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


def write_recording(
    recorder: Recorder, path: str | Path, *, typed_labels: bool = True, patient: Subject | None = None
) -> list[Path]:
    """Write ``recorder`` in the format the suffix names; returns the files written.

    EDF/BDF only: ``typed_labels`` prefixes each label with its EDF+ signal type (``EEG Fp1``), for
    readers that type channels by label; a BIDS data file goes without (its channels.tsv types them).
    ``patient`` is whom the header names (default: the metainfo's subject).
    """
    target = Path(path)
    check_writable(target)
    if recorder.first_packet_id is None:
        raise RecordingError("nothing to write: no packet was recorded")
    subject = recorder.metainfo.subject if patient is None else patient
    writers: dict[str, Callable[[Recorder, Path], list[Path]]] = {
        ".npz": _write_npz,
        ".csv": _write_csv,
        ".edf": lambda r, p: _write_edf(r, p, False, typed_labels, subject),
        ".bdf": lambda r, p: _write_edf(r, p, True, typed_labels, subject),
    }
    return writers[target.suffix.lower()](recorder, target)


def _write_npz(recorder: Recorder, path: Path) -> list[Path]:
    arrays: dict[str, Any] = {}
    for signal in recorder.periodic:
        name = signal.type.name
        arrays[name] = recorder.signal_data(signal)
        arrays[f"{name}_labels"] = np.array(signal.channel_names, dtype=str)
        arrays[f"{name}_rate"] = np.float64(signal.sampling_rate)
        arrays[f"{name}_unit"] = np.str_(physical_unit(signal))
    arrays["events"] = recorder.event_array()
    arrays["packet_ids"] = np.array(recorder.packet_ids, dtype=np.int64)
    arrays["connection_numbers"] = np.array(recorder.connection_numbers, dtype=np.int64)
    arrays["timestamps"] = np.array(recorder.timestamps, dtype=np.uint64)
    arrays["gaps"] = np.array(
        [(g.packet_id, g.count, g.signal or "") for g in recorder.gaps],
        dtype=[("packet_id", "<i8"), ("count", "<i8"), ("signal", "<U16")],
    )
    arrays["first_packet_id"] = np.int64(recorder.first_packet_id or 0)
    arrays["master_rate"] = np.float64(recorder.metainfo.master_sampling_rate)
    arrays["master_block_size"] = np.int64(recorder.master_block_size)
    arrays["subject_id"] = np.str_(recorder.metainfo.subject.id)
    arrays["start_time"] = np.str_(recorder.start_time.isoformat() if recorder.start_time else "")
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return [path]


def _write_csv(recorder: Recorder, path: Path) -> list[Path]:
    master = exact_rate(recorder.metainfo.master_sampling_rate)
    main = [s for s in recorder.periodic if exact_rate(s.sampling_rate) == master]
    others = [s for s in recorder.periodic if exact_rate(s.sampling_rate) != master]
    written = [path]
    _write_signal_csv(path, main, [recorder.signal_data(s) for s in main], master)
    for signal in others:
        extra = path.with_name(f"{path.stem}_{signal.type.name}{path.suffix}")
        _write_signal_csv(
            extra, [signal], [recorder.signal_data(signal)], exact_rate(signal.sampling_rate)
        )
        written.append(extra)
    if recorder.aperiodic:
        events_path = path.with_name(f"{path.stem}_events{path.suffix}")
        rate = float(recorder.master_rate)
        with open(events_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["time_s", "sample", "packet_id", "signal", "label", "value"])
            for e in recorder.events:
                writer.writerow(
                    [repr(e.sample / rate), e.sample, e.packet_id, e.signal, e.label,
                     f"{e.value:.9g}"]
                )
        written.append(events_path)
    return written


def _write_edf(recorder: Recorder, path: Path, bdf: bool, typed_labels: bool, subject: Subject) -> list[Path]:
    edfio = _edfio()
    if not recorder.periodic:
        raise RecordingError("EDF/BDF needs at least one periodic signal")
    per_record, padding = _record_layout(recorder.packet_span, recorder.packet_period)
    signal_class = edfio.BdfSignal if bdf else edfio.EdfSignal
    digital = _BDF_DIGITAL if bdf else _EDF_DIGITAL
    labels = _edf_labels(recorder.periodic, typed_labels)
    signals = []
    for signal in recorder.periodic:
        data = recorder.signal_data(signal, padding).astype(np.float64)
        for channel, label in enumerate(labels[signal.flag]):
            try:
                signals.append(
                    _edf_signal(
                        signal_class, data[channel], signal, label, digital
                    )
                )
            except ValueError as error:
                raise RecordingError(f"channel {label}: {error}") from None
    annotations = _annotations(recorder, edfio.EdfAnnotation, padding)
    start = recorder.start_time or datetime.datetime.now()
    name = "_".join(p for p in (subject.surname, subject.first_name) if p)
    file_class = edfio.Bdf if bdf else edfio.Edf
    try:
        document = file_class(
            signals,
            patient=edfio.Patient(code=_edf_field(subject.id), name=_edf_field(name)),
            recording=edfio.Recording(startdate=start.date(), equipment_code="TiA"),
            starttime=start.time().replace(microsecond=0),
            data_record_duration=float(per_record * recorder.packet_period),
            annotations=annotations,
        )
        document.write(path)
    except ValueError as error:
        raise RecordingError(f"cannot write {path}: {error}") from None
    return [path]


def _annotations(recorder: Recorder, annotation: Any, padding: int) -> list[Any]:
    first = recorder.first_packet_id or 0
    rate = recorder.master_rate
    period = recorder.packet_period
    result = [
        annotation(float(Fraction(e.sample) / rate), None, f"{e.label}={e.value:.9g}")
        for e in recorder.events
    ]
    for gap in recorder.gaps:
        text = _GAP_ANNOTATION if gap.signal is None else f"{_GAP_ANNOTATION} {gap.signal}"
        result.append(
            annotation(
                float((gap.packet_id - first) * period), float(gap.count * period), text
            )
        )
    if padding:
        result.append(
            annotation(
                float(recorder.packet_span * period),
                float(padding * period),
                f"{_GAP_ANNOTATION} padding",
            )
        )
    return sorted(result, key=lambda a: a.onset)


def seconds_format(rate: Fraction) -> str:
    """A %-format with enough decimals to write every sample time exactly when 1/rate terminates."""
    for decimals in range(10):
        if (Fraction(10**decimals) / rate).denominator == 1:
            return f"%.{decimals}f"
    return "%.9f"


def _write_signal_csv(
    path: Path, signals: Sequence[SignalInfo], data: Sequence[SampleArray], rate: Fraction
) -> None:
    header = ["time_s"]
    for signal in signals:
        header.extend(f"{signal.type.name}:{label}" for label in signal.channel_names)
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
            fmt=[seconds_format(rate)] + ["%.9g"] * columns.shape[1],
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


def _edf_type_prefix(signal: SignalInfo) -> str:
    """The EDF+ signal-type prefix of a channel label (``EEG`` in ``EEG Fp1``) for this TiA type."""
    return _EDF_TYPE_PREFIXES.get(signal.type.name, _EDF_OTHER_PREFIX)


def _edf_labels(signals: Sequence[SignalInfo], typed: bool) -> dict[int, list[str]]:
    """Unique 16-character ASCII labels: the TiA label, ``typed`` after its EDF+ type and a space (cut to fit)."""
    used: set[str] = set()
    result: dict[int, list[str]] = {}
    for signal in signals:
        prefix = _edf_type_prefix(signal) + " " if typed else ""
        labels = []
        for number, name in enumerate(signal.channel_names, start=1):
            text = _edf_text(name).strip() or f"{signal.type.name}{number}"
            label = base = (prefix + text)[:_EDF_LABEL_LENGTH]
            if not typed and label in used:  # the same label in two signals: say which
                label = base = f"{signal.type.name} {label}"[:_EDF_LABEL_LENGTH]
            suffix = 2
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
        transducer_type=_TRANSDUCER_PREFIX + signal.type.name,
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
