"""A server recording's raw journal, ``NAME.tia`` + ``NAME.json``: its format, reading it back, converting it.

``NAME.tia`` holds the TiA 1.0 data packets themselves (version 3,
little-endian float32, the header's connection number counting the packets
in the file), i.e. exactly the bytes a TCP data client receives, so every
float32 sample is kept bit for bit; it can only grow, so a crash leaves at
worst a packet cut short at its end, which :meth:`RawRecording.packets`
ignores. ``NAME.json`` beside it holds the metainfo (as TiA XML, and as plain
JSON for other tools), the wall-clock start and, once the run ended cleanly,
a ``finished`` summary. The server writes it (:mod:`tia.recording.sink`);
this module is the format's other half and needs no server:
:func:`convert_raw` turns a journal into EDF/BDF/NPZ/CSV (and a BIDS run)
through the same writers as ``tia record``, for ``tia convert`` after a crash
and, in a child process (:func:`convert_in_child`), for the server at a
graceful stop.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tia.protocol.channels import physical_unit
from tia.protocol.metainfo import MetaInfo, MetaInfoError
from tia.protocol.packet import DataPacket, PacketError, PacketStreamDecoder
from tia.recording.bids import BIDSRun, write_bids_run
from tia.recording.recorder import Recorder, RecordingError
from tia.recording.writers import write_recording

__all__ = [
    "CONVERTING_SUFFIX",
    "RAW_FORMAT",
    "RAW_SUFFIX",
    "SIDECAR_SUFFIX",
    "Conversion",
    "RawRecording",
    "convert_in_child",
    "convert_raw",
    "describe_error",
    "open_raw",
    "sidecar",
    "write_json",
]

RAW_SUFFIX = ".tia"
SIDECAR_SUFFIX = ".json"
RAW_FORMAT = "txtia-raw-1"
CONVERTING_SUFFIX = ".converting"  # the scratch directory of an output being written
READ_CHUNK = 1 << 20


def describe_error(error: BaseException) -> str:
    """One line for the user: an OSError's file, text and errno name (``... (ENOSPC)``)."""
    if isinstance(error, OSError):
        text = error.strerror or str(error)
        name = errno.errorcode.get(error.errno or 0)
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{text}" + (f" ({name})" if name else "")
    return str(error) or type(error).__name__


# ------------------------------------------------------------------ writing the sidecar


def write_json(path: Path, document: dict[str, Any], exclusive: bool = False) -> None:
    """Write ``document`` synced to disk: atomically (a temporary file renamed over it), or with
    ``exclusive`` as a new file, failing if it exists."""
    data = (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
    if exclusive:
        with open(path, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def describe_metainfo(metainfo: MetaInfo) -> dict[str, Any]:
    """The metainfo as plain JSON, for people and for tools other than ours."""
    return {
        "master": {"sampling_rate": metainfo.master_sampling_rate, "block_size": metainfo.master_block_size},
        "subject": {
            "id": metainfo.subject.id, "first_name": metainfo.subject.first_name,
            "surname": metainfo.subject.surname,
        },
        "signals": [
            {
                "type": signal.type.name, "flag": signal.flag, "aperiodic": signal.type.aperiodic,
                "sampling_rate": signal.sampling_rate, "block_size": signal.block_size,
                "unit": physical_unit(signal), "channels": signal.channel_names,
            }
            for signal in metainfo.signals
        ],
    }


def sidecar(
    metainfo: MetaInfo,
    raw: Path | None,
    *,
    started: datetime.datetime | None,
    first_timestamp: int | None,
    flush_interval: float,
    formats: Sequence[str],
    server: dict[str, Any],
    finished: dict[str, Any] | None = None,
    sample_order: str = "channel-major",
) -> dict[str, Any]:
    """The ``NAME.json`` document; ``finished`` (packets, files, ...) once the run ended cleanly.
    ``sample_order``: the layout of the packets as sent, so they are read back as sent."""
    return {
        "format": RAW_FORMAT,
        "about": "raw: TiA 1.0 data packets (version 3, little-endian float32) as sent, one after "
        "the other; the header's connection number counts the packets in this file. Read with "
        "tia.recording.journal.open_raw or convert with 'tia convert'.",
        "raw": raw.name if raw else None,
        "started": started.isoformat() if started else None,
        "first_packet_timestamp_us": first_timestamp,
        "flush_interval": flush_interval,
        "sample_order": sample_order,
        "formats": list(formats),
        "server": server,
        **describe_metainfo(metainfo),
        "metainfo_xml": metainfo.to_xml().decode("utf-8"),
        "finished": finished,
    }


# ------------------------------------------------------------------ reading the journal back


@dataclass
class RawRecording:
    """A journal opened for reading: its sidecar and a packet iterator."""

    path: Path
    sidecar: dict[str, Any]
    metainfo: MetaInfo
    started: datetime.datetime | None
    notes: list[str]

    @property
    def sample_order(self) -> str:
        """How the packets lay out each block (``[server] sample_order``; journals older than the
        key are channel-major, as every server was then)."""
        return str(self.sidecar.get("sample_order", "channel-major"))

    def packets(self) -> Iterator[DataPacket]:
        """Every complete packet in order; a cut or corrupt tail is noted in ``notes`` and skipped."""
        decoder = PacketStreamDecoder(max_size=1 << 30, sample_order=self.sample_order)
        offset = 0
        with open(self.path, "rb") as handle:
            while True:
                chunk = handle.read(READ_CHUNK)
                if not chunk:
                    break
                try:
                    packets = decoder.feed(chunk)
                except PacketError as error:
                    yield from error.packets
                    self.notes.append(f"{self.path.name}: unreadable data after packet {offset} ({error}); "
                                      "kept what came before")
                    return
                offset += len(packets)
                yield from packets
        if decoder.buffered:
            self.notes.append(f"{self.path.name}: ignored the last {decoder.buffered} bytes, a packet cut "
                              "short (the recording was not stopped cleanly)")


def _raw_paths(path: str | Path) -> tuple[Path, Path]:
    """(journal, sidecar) from either of them or their common stem."""
    given = Path(path)
    if given.suffix == SIDECAR_SUFFIX:
        return given.with_suffix(RAW_SUFFIX), given
    if given.suffix == RAW_SUFFIX:
        return given, given.with_suffix(SIDECAR_SUFFIX)
    return given.with_name(given.name + RAW_SUFFIX), given.with_name(given.name + SIDECAR_SUFFIX)


def open_raw(path: str | Path, stopping: bool = False) -> RawRecording:
    """Open a journal (``NAME.tia``, ``NAME.json`` or ``NAME``) for reading."""
    raw, sidecar_path = _raw_paths(path)
    try:
        document = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordingError(f"{sidecar_path}: not found (the sidecar of {raw.name})") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise RecordingError(f"{sidecar_path}: not a recording sidecar: {error}") from None
    if not isinstance(document, dict) or document.get("format") != RAW_FORMAT:
        raise RecordingError(f"{sidecar_path}: not a {RAW_FORMAT} sidecar")
    if not raw.exists():
        raise RecordingError(f"{raw}: not found")
    try:
        metainfo = MetaInfo.from_xml(str(document["metainfo_xml"]).encode("utf-8"))
    except (KeyError, MetaInfoError) as error:
        raise RecordingError(f"{sidecar_path}: unusable metainfo: {error}") from None
    started = None
    if document.get("started"):
        try:
            started = datetime.datetime.fromisoformat(str(document["started"]))
        except ValueError:
            started = None
    notes = []
    if document.get("finished") is None and not stopping:
        notes.append(f"{raw.name} was not stopped cleanly: recovered up to its last flush")
    return RawRecording(raw, document, metainfo, started, notes)


# ------------------------------------------------------------------ converting


@dataclass
class Conversion:
    files: list[Path]
    notes: list[str]
    recorder: Recorder


def convert_raw(
    path: str | Path, outputs: Sequence[str | Path], overwrite: bool = False, stopping: bool = False,
    bids: BIDSRun | None = None,
) -> Conversion:
    """Write a journal as the formats the outputs' suffixes name (.edf, .bdf, .npz, .csv), and as a run
    of the BIDS dataset ``bids`` names.

    Each output is written in a scratch directory beside it, then linked into
    place; an existing file is never replaced unless ``overwrite`` (nothing of
    a BIDS dataset ever is). ``stopping``: called by the recorder itself while
    it stops, not recovering.
    """
    recording = open_raw(path, stopping)
    recorder = Recorder(recording.metainfo)
    for packet in recording.packets():
        recorder.feed(packet)
    if recorder.first_packet_id is None:
        raise RecordingError(f"{recording.path}: no complete packet to convert")
    if recording.started is not None:
        # Local wall-clock time of the first packet, as EDF headers expect.
        recorder.start_time = recording.started.astimezone().replace(tzinfo=None)
    notes = list(recording.notes)
    if recorder.missing_packets:
        notes.append(f"{recorder.missing_packets} packets are missing ({len(recorder.gaps)} gaps, e.g. dropped "
                     "by a full queue); stored as NaN, in EDF/BDF annotated BAD_ACQ_SKIP")
    files: list[Path] = []
    for output in map(Path, outputs):
        scratch = output.with_name(output.name + CONVERTING_SUFFIX)
        scratch.mkdir()
        try:
            for written in write_recording(recorder, scratch / output.name):
                target = output.with_name(written.name)
                _place(written, target, overwrite)
                files.append(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    if bids is not None:
        files.extend(write_bids_run(recorder, bids))
    return Conversion(files, notes, recorder)


def _place(source: Path, target: Path, overwrite: bool) -> None:
    """Move ``source`` to ``target``; without ``overwrite`` an existing target is an error."""
    if overwrite:
        os.replace(source, target)
        return
    try:
        os.link(source, target)  # atomic, and fails if the target exists
    except FileExistsError:
        raise RecordingError(f"{target} exists; not overwritten") from None
    except OSError:  # no hard links on this file system (FAT, some network shares)
        if target.exists():
            raise RecordingError(f"{target} exists; not overwritten") from None
        os.replace(source, target)
        return
    source.unlink()


_CHILD = "import sys; from tia.recording.journal import convert_main; sys.exit(convert_main(sys.argv[1:]))"


def convert_in_child(raw: Path, outputs: Sequence[Path], bids: BIDSRun | None = None) -> dict[str, Any]:
    """``convert_raw`` in a new interpreter; returns its ``files`` and ``notes``.

    Its CPU time and memory (the whole recording at once) never hold the GIL
    or the heap of a server, which may go on streaming meanwhile.
    """
    import tia

    package_root = str(Path(tia.__file__).resolve().parent.parent)
    path = os.pathsep.join([package_root, *filter(None, [os.environ.get("PYTHONPATH")])])
    process = subprocess.run(
        [sys.executable, "-c", _CHILD, str(raw), *map(str, outputs),
         *(["--bids", json.dumps(bids.to_json())] if bids is not None else [])],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path}, check=False,
    )
    lines = process.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except ValueError:
        result = {}
    if process.returncode != 0 or "files" not in result:
        reason = result.get("error") or (process.stderr.strip().splitlines() or ["no output"])[-1]
        raise RecordingError(f"the conversion process failed (exit {process.returncode}): {reason}")
    return result


def convert_main(argv: Sequence[str]) -> int:
    """The child of ``convert_in_child``: ``RAW OUTPUT... [--bids JSON]``, one JSON line on stdout."""
    if hasattr(os, "nice"):
        os.nice(10)  # behind the server, should both share a core
    raw, *outputs = argv
    bids_json = None
    if "--bids" in outputs:
        at = outputs.index("--bids")
        outputs, bids_json = outputs[:at], outputs[at + 1]
    try:
        bids = None if bids_json is None else BIDSRun.from_json(json.loads(bids_json))
        result = convert_raw(raw, outputs, stopping=True, bids=bids)
    except (RecordingError, OSError, MemoryError, ValueError) as error:
        sys.stdout.write(json.dumps({"error": describe_error(error)}) + "\n")  # the parent reads this line
        return 1
    sys.stdout.write(json.dumps({"files": [str(p) for p in result.files], "notes": result.notes}) + "\n")
    return 0
