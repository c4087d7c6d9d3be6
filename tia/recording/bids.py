"""A recording as one run of a BIDS-EEG dataset: ``tia record --bids``, ``[recording] formats = bids``,
``tia convert --bids``.

mne-bids (the ``bids`` extra) lays the dataset out: the data file (BDF, or EDF), ``*_channels.tsv``,
``*_eeg.json``, ``dataset_description.json``, ``participants.tsv`` and ``*_scans.tsv``. The data file is
ours, written first by the writers of ``tia record`` (labels without an EDF+ type prefix, since
channels.tsv types the channels; the header names only the BIDS subject, never the subject's name), and
after mne-bids we complete what it cannot know:

- ``*_events.tsv`` (and its ``.json``) from the TiA events: onset in seconds on the packet grid, the
  channel label as ``trial_type``, the code as ``value``, the TiA signal type, and the gaps
  (``BAD_ACQ_SKIP``). mne-bids derives ``trial_type`` from an integer code, but TiA codes are any
  number and several labels share them;
- the ``units`` and ``sampling_frequency`` of channels.tsv: TiA's (``mmHg``, ``bpm``; each signal's own
  rate) where MNE knows no such unit or resamples to one rate;
- in ``*_eeg.json``: ``SoftwareVersions``, ``MISCChannelCount``, the power line frequency, and no
  manufacturer (mne-bids guesses one from the file's suffix).

A run never overwrites anything: without a run number it is one more than the highest run of that
subject, session and task in the dataset; a given run that exists is refused.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from tia.protocol.channels import physical_unit
from tia.protocol.metainfo import Subject
from tia.recording.recorder import Recorder, RecordingError, exact_rate
from tia.recording.writers import seconds_format, write_recording

__all__ = ["BIDS_DATA_FORMATS", "BIDSRun", "bids_label", "check_run_free", "missing_bids", "next_run", "write_bids_run"]

BIDS_DATA_FORMATS = ("bdf", "edf")
_LABEL = re.compile(r"[A-Za-z0-9]+")
# The MNE channel types of the TiA types; mne-bids names them in BIDS (EEG, EOG, ECG, EMG). Every other
# TiA type (hr, bp, sensor, user1, ...) is MISC: BIDS-EEG has no type for it.
_MNE_TYPES = {"eeg": "eeg", "eog": "eog", "ecg": "ecg", "emg": "emg"}
_BIDS_UNITS = {"uV": "µV"}  # the spelling the BIDS specification uses
_GAP = "BAD_ACQ_SKIP"
_EVENTS_JSON = {
    "onset": {"Description": "Time of the event from the start of the recording, on the TiA packet grid",
              "Units": "s"},
    "duration": {"Description": "Duration of the event (0: an instant; a gap: how long data is missing)",
                 "Units": "s"},
    "trial_type": {"Description": "The TiA channel that sent the event (its label), or BAD_ACQ_SKIP for "
                                  "data missing from the recording (a gap, stored as the physical minimum)"},
    "value": {"Description": "The event code (the value the TiA channel sent)"},
    "sample": {"Description": "Onset in samples of the data file, from 0"},
    "signal": {"Description": "The TiA signal type of the channel (event, button, axis, keycode, "
                              "mouse-button), or of the signal missing in a gap (n/a: whole packets)"},
}


@dataclass(frozen=True)
class BIDSRun:
    """Where a run goes: the dataset's root, its BIDS entities, the data format, the line frequency."""

    root: Path
    subject: str
    task: str
    session: str | None = None
    run: int | None = None  # None: the next free run of this subject, session and task
    data_format: str = "bdf"  # or "edf"
    line_freq: float | None = None  # PowerLineFrequency (Hz); None: n/a

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        bids_label(self.subject, "subject")
        bids_label(self.task, "task")
        if self.session is not None:
            bids_label(self.session, "session")
        if self.data_format not in BIDS_DATA_FORMATS:
            raise RecordingError(f"BIDS data format {self.data_format!r} is not one of {', '.join(BIDS_DATA_FORMATS)}")
        if self.run is not None and self.run < 1:
            raise RecordingError(f"run {self.run}: a run number is 1 or more")

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (for the conversion child process); :meth:`from_json` reads it back."""
        return {**dataclasses.asdict(self), "root": str(self.root)}

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> BIDSRun:
        return cls(**{field.name: document[field.name] for field in dataclasses.fields(cls) if field.name in document})

    def describe(self) -> str:
        """``ROOT (sub-X ses-Y task-Z)`` for people."""
        entities = [f"sub-{self.subject}", *([f"ses-{self.session}"] if self.session else []), f"task-{self.task}"]
        return f"{self.root} ({' '.join(entities)})"


def bids_label(text: str, entity: str) -> str:
    """``text`` if it can be a BIDS ``entity`` label (letters and digits only); else one line saying so."""
    if not _LABEL.fullmatch(text):
        shown = f"{text!r} is not" if text else "an empty text is not"
        raise RecordingError(f"{shown} a BIDS {entity} label: letters and digits only (e.g. 01, S01, rest)")
    return text


def missing_bids() -> str | None:
    """None if BIDS can be written here; else one line naming the extra to install."""
    for module, package in (("mne_bids", "mne-bids"), ("edfio", "edfio")):
        try:
            importlib.import_module(module)
        except ImportError:
            return f"writing BIDS needs {package}: pip install 'txtia[bids]'"
    return None


def _mne_bids() -> Any:
    missing = missing_bids()
    if missing is not None:
        raise RecordingError(missing)
    return importlib.import_module("mne_bids")


def _run_files(target: BIDSRun) -> Iterator[tuple[int, Path]]:
    """(run, file) of every file of this subject, session and task in its eeg folder."""
    folder = target.root / f"sub-{target.subject}"
    stem = f"sub-{target.subject}"
    if target.session:
        folder /= f"ses-{target.session}"
        stem += f"_ses-{target.session}"
    pattern = re.compile(re.escape(f"{stem}_task-{target.task}_") + r"(?:[a-z]+-[A-Za-z0-9]+_)*?run-(\d+)_")
    if not (folder / "eeg").is_dir():
        return
    for path in (folder / "eeg").iterdir():
        match = pattern.match(path.name)
        if match:
            yield int(match.group(1)), path


def next_run(target: BIDSRun) -> int:
    """One more than the highest run of this subject, session and task in the dataset, at least 1."""
    return max((run for run, _ in _run_files(target)), default=0) + 1


def _check_free(target: BIDSRun, run: int) -> None:
    taken = sorted(path.name for number, path in _run_files(target) if number == run)
    if taken:
        raise RecordingError(f"run {run} of {target.describe()} exists ({taken[0]}); nothing is overwritten")


def check_run_free(target: BIDSRun) -> None:
    """Refuse a given run number that the dataset already has (before anything is recorded)."""
    if target.run is not None:
        _check_free(target, target.run)


def write_bids_run(recorder: Recorder, target: BIDSRun) -> list[Path]:
    """Write ``recorder`` as the next run (or ``target.run``) of the dataset; returns the files written."""
    mne_bids = _mne_bids()
    if recorder.first_packet_id is None:
        raise RecordingError("nothing to write: no packet was recorded")
    if not recorder.periodic:
        raise RecordingError("BIDS-EEG needs at least one periodic signal")
    run = target.run if target.run is not None else next_run(target)
    _check_free(target, run)
    target.root.mkdir(parents=True, exist_ok=True)
    _describe_dataset(mne_bids, target.root)
    path = mne_bids.BIDSPath(
        subject=target.subject, session=target.session, task=target.task, run=run, datatype="eeg",
        root=target.root,
    )
    # The data file is written beside the dataset (same file system), in a folder validators skip.
    scratch = Path(tempfile.mkdtemp(prefix=".tia-bids-", dir=target.root))
    try:
        data = scratch / f"data.{target.data_format}"
        write_recording(recorder, data, typed_labels=False, patient=Subject(id=target.subject))
        raw = _read_raw(data, recorder, target)
        with warnings.catch_warnings():
            # mne-bids warns of what we complete below (no events given, no line frequency)
            warnings.simplefilter("ignore")
            try:
                mne_bids.write_raw_bids(raw, path, overwrite=False, verbose="error")
            except FileExistsError as error:
                raise RecordingError(f"run {run} of {target.describe()} appeared meanwhile ({error}); "
                                     "nothing is overwritten") from None
            except (ValueError, RuntimeError) as error:
                raise RecordingError(f"mne-bids cannot write run {run} of {target.describe()}: "
                                     f"{' '.join(str(error).split())}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    sidecars = path.copy().update(extension=None, suffix=None)
    channels = sidecars.copy().update(suffix="channels", extension=".tsv").fpath
    _complete_channels(channels, recorder)
    eeg_json = sidecars.copy().update(suffix="eeg", extension=".json")
    _complete_eeg_json(mne_bids, eeg_json, recorder, target)
    events = sidecars.copy().update(suffix="events", extension=".tsv").fpath
    _write_events(events, recorder, float(raw.info["sfreq"]))
    return [path.fpath, eeg_json.fpath, channels, events, events.with_suffix(".json")]


def _describe_dataset(mne_bids: Any, root: Path) -> None:
    """A new dataset's dataset_description.json: named after its folder, generated by txtia and mne-bids."""
    if (root / "dataset_description.json").exists():
        return
    from tia import __version__

    mne_bids.make_dataset_description(
        path=root, name=root.resolve().name, dataset_type="raw", verbose="error",
        generated_by=[
            {"Name": "txtia", "Version": __version__,
             "Description": "recorded from a TOBI Interface A (TiA 1.0) server"},
            {"Name": "MNE-BIDS", "Version": mne_bids.__version__, "CodeURL": "https://mne.tools/mne-bids/"},
        ],
    )


def _read_raw(data: Path, recorder: Recorder, target: BIDSRun) -> Any:
    """The data file as MNE reads it, typed from the TiA types, without annotations (events.tsv has them)."""
    mne = importlib.import_module("mne")  # untyped; installed with mne-bids
    reader = mne.io.read_raw_bdf if target.data_format == "bdf" else mne.io.read_raw_edf
    raw = reader(data, preload=False, verbose="error")
    types = [_MNE_TYPES.get(signal.type.name, "misc") for signal in recorder.periodic for _ in signal.labels]
    if len(types) != len(raw.ch_names):
        raise RecordingError(f"{data.name}: MNE reads {len(raw.ch_names)} channels, we wrote {len(types)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the unit of misc channels changes": they have none in MNE
        raw.set_channel_types(dict(zip(raw.ch_names, types, strict=True)), verbose="error")
    raw.set_annotations(None)
    raw.info["line_freq"] = target.line_freq
    return raw


def _complete_channels(path: Path, recorder: Recorder) -> None:
    """TiA's unit and rate of each channel into channels.tsv (in the data file's order)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:  # older mne-bids start with a BOM
        rows = list(csv.reader(handle, delimiter="\t"))
    header, body = rows[0], rows[1:]
    channels = [(signal, physical_unit(signal)) for signal in recorder.periodic for _ in signal.labels]
    if len(body) != len(channels):
        raise RecordingError(f"{path.name} lists {len(body)} channels, the recording has {len(channels)}")
    units, rates = header.index("units"), header.index("sampling_frequency")
    for row, (signal, unit) in zip(body, channels, strict=True):
        row[units] = _BIDS_UNITS.get(unit, unit) or "n/a"
        row[rates] = f"{float(exact_rate(signal.sampling_rate)):.10g}"
    _write_tsv(path, header, body, replace=True)


def _complete_eeg_json(mne_bids: Any, path: Any, recorder: Recorder, target: BIDSRun) -> None:
    from tia import __version__

    misc = sum(signal.num_channels for signal in recorder.periodic if signal.type.name not in _MNE_TYPES)
    entries = {
        "Manufacturer": "n/a",
        "SoftwareVersions": f"txtia {__version__} (TiA 1.0)",
        "PowerLineFrequency": target.line_freq if target.line_freq is not None else "n/a",
        "MISCChannelCount": misc,
    }
    mne_bids.update_sidecar_json(path, entries, verbose="error")


def _write_events(path: Path, recorder: Recorder, file_rate: float) -> None:
    """events.tsv and events.json: every TiA event, then every gap, in time order."""
    rate = recorder.master_rate
    period = recorder.packet_period
    first = recorder.first_packet_id or 0
    seconds = seconds_format(rate)

    def row(onset: Fraction, duration: Fraction, kind: str, value: str, signal: str) -> tuple[Fraction, list[str]]:
        return onset, [seconds % onset, seconds % duration, kind, value, str(round(onset * Fraction(file_rate))),
                       signal]

    rows = [row(Fraction(e.sample) / rate, Fraction(0), e.label, f"{e.value:.9g}", e.signal) for e in recorder.events]
    rows += [row((gap.packet_id - first) * period, gap.count * period, _GAP, "n/a", gap.signal or "n/a")
             for gap in recorder.gaps]
    rows.sort(key=lambda item: item[0])
    _write_tsv(path, list(_EVENTS_JSON), [cells for _, cells in rows])
    with open(path.with_suffix(".json"), "x", encoding="utf-8") as handle:
        handle.write(json.dumps(_EVENTS_JSON, indent=4, ensure_ascii=False) + "\n")


def _write_tsv(path: Path, header: list[str], rows: list[list[str]], replace: bool = False) -> None:
    """A BIDS TSV file: tab-separated, LF line ends, UTF-8; a new file unless ``replace``."""
    with open(path, "w" if replace else "x", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
