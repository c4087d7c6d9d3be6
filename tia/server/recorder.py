"""Server-side sinks: recording what the server sends, off the reactor thread.

A sink is one more subscriber of the stream hub. On the reactor thread its
``deliver`` only puts the ticks (immutable, so nothing to copy and nothing a
source could change later) on a bounded queue;
a worker thread of its own does the disk or network work. When the worker
falls behind by more than the queue holds, ticks are dropped, counted and
logged (rate-limited): a sink never delays the network clients.

Recording is crash-safe by journaling. The worker appends every tick to a
raw file, ``NAME.tia``: the TiA 1.0 data packets themselves (version 3,
little-endian float32, the header's connection number counting the packets
in the file), i.e. exactly the bytes a TCP data client receives, so every
float32 sample is kept bit for bit. ``NAME.json`` beside it holds the
metainfo (channel labels, rates, units, subject) and the start time. The
journal is flushed and ``fsync``-ed every ``flush_interval`` seconds, so a
crash loses at most that much (plus whatever was still queued), and a
packet cut short by the crash is ignored when read back. EDF+/BDF+ (and
NPZ/CSV) are written from the journal at a graceful stop by
:class:`tia.recording.Recorder`, the same writers ``tia record`` uses; after
a crash, ``tia convert NAME.tia -o NAME.bdf`` does it. EDF cannot be
appended safely as it goes: its header holds the record count and each
channel's physical range, which the recorder takes from the data.
"""

from __future__ import annotations

import datetime
import errno
import json
import math
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from tia.config import RecordingConfig
from tia.protocol.control import (
    GET_RECORDING_STATE,
    OK_REPLY,
    RECORDING_STATE,
    START_RECORDING,
    STOP_RECORDING,
    ControlMessage,
    build_error,
    build_message,
)
from tia.protocol.metainfo import MetaInfo, MetaInfoError
from tia.protocol.packet import DataPacket, PacketError, PacketStreamDecoder, encode_header
from tia.recording import Recorder, RecordingError, channel_names, physical_unit
from tia.server.tick import Tick

if TYPE_CHECKING:
    from tia.server.control import ControlCommands, ServerControlProtocol
    from tia.server.hub import StreamHub
    from tia.server.service import TiAService

__all__ = [
    "GET_RECORDING_STATE",
    "RAW_SUFFIX",
    "RECORDING_STATE",
    "START_RECORDING",
    "STOP_RECORDING",
    "QueueSink",
    "RawRecording",
    "RecordingManager",
    "RecordingService",
    "RecordingSink",
    "attach_recording",
    "convert_raw",
    "open_raw",
]

log = Logger()

RAW_SUFFIX = ".tia"
SIDECAR_SUFFIX = ".json"
RAW_FORMAT = "txtia-raw-1"
CONVERTING_SUFFIX = ".converting"
DROP_LOG_INTERVAL = 10.0  # seconds between two overflow warnings of one sink
MIN_QUEUE = 16  # ticks
READ_CHUNK = 1 << 20

Opener = Callable[[Path], IO[bytes]]


_STOP = object()


class QueueSink:
    """A hub subscriber whose work runs in its own thread behind a bounded queue.

    Subclasses implement ``opened`` (first thing in the thread), ``handle``
    (one tick), ``idle`` (after each tick and at least every
    ``idle_seconds``) and ``closing`` (after the last tick). ``deliver``
    never blocks: a full queue drops the tick, counts it in ``dropped`` and
    logs at most once per ``DROP_LOG_INTERVAL``.
    """

    idle_seconds = 0.2

    def __init__(self, name: str, capacity: int, reactor: Any) -> None:
        self.name = name
        self.capacity = max(MIN_QUEUE, capacity)
        self.reactor = reactor
        self.dropped = 0
        self._queue: queue.Queue[object] = queue.Queue(self.capacity)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = False
        self._waiters: list[Deferred[None]] = []
        self._drops_unlogged = 0
        self._drop_logged_at = -math.inf

    # ---------------------------------------------------------------- reactor thread

    def deliver(self, ticks: Sequence[Tick]) -> None:
        for tick in ticks:
            try:
                self._queue.put_nowait(tick)
            except queue.Full:
                self._dropped_one()

    def _dropped_one(self) -> None:
        self.dropped += 1
        self._drops_unlogged += 1
        now = time.monotonic()
        if now - self._drop_logged_at >= DROP_LOG_INTERVAL:
            log.warn(
                "{sink}: queue full ({capacity} packets), dropped {count} packets "
                "({total} so far); the disk or network behind it is too slow",
                sink=self.name, capacity=self.capacity, count=self._drops_unlogged, total=self.dropped,
            )
            self._drop_logged_at = now
            self._drops_unlogged = 0

    def start(self) -> None:
        """Start the worker thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"tia-{self.name}", daemon=True)
            self._thread.start()

    def stop(self) -> Deferred[None]:
        """Finish the queued ticks, close, and fire when the worker is done. Unsubscribe first."""
        waiter: Deferred[None] = Deferred()
        if self._thread is None or self._finished:
            self._finished = True
            waiter.callback(None)
            return waiter
        self._waiters.append(waiter)
        if not self._stopping.is_set():
            self._stopping.set()
            try:
                self._queue.put_nowait(_STOP)
            except queue.Full:
                pass  # the worker sees _stopping once it has drained the queue
        return waiter

    @property
    def finished(self) -> bool:
        return self._finished

    def _done(self) -> None:
        self._finished = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    # ---------------------------------------------------------------- worker thread

    def say(self, level: str, text: str, **fields: object) -> None:
        """Log from the worker through the reactor thread, where observers expect to run."""
        self.reactor.callFromThread(getattr(log, level), text, sink=self.name, **fields)

    def _run(self) -> None:
        try:
            self._guarded(self.opened)
            while True:
                try:
                    item = self._queue.get(timeout=max(0.001, self.idle_seconds))
                except queue.Empty:
                    if self._stopping.is_set():
                        break
                    item = None
                if item is _STOP:
                    break
                if isinstance(item, Tick):
                    self._guarded(self.handle, item)
                self._guarded(self.idle)
            self._guarded(self.closing)
        finally:
            self.reactor.callFromThread(self._done)

    def _guarded(self, step: Callable[..., None], *args: object) -> None:
        try:
            step(*args)
        except Exception:
            failure = Failure()
            self.reactor.callFromThread(
                log.failure, "{sink}: unexpected error in {step}", failure, sink=self.name, step=step.__name__
            )

    def opened(self) -> None:
        """First thing in the worker thread."""

    def handle(self, tick: Tick) -> None:
        """One tick, in order."""

    def idle(self) -> None:
        """After each tick, and every ``idle_seconds`` without one."""

    def closing(self) -> None:
        """After the last tick, before ``stop()`` fires."""


# ------------------------------------------------------------------ names


class _RunMarker:
    """Formats as a marker whatever the format spec, to find where the run number goes."""

    def __format__(self, spec: str) -> str:
        return "\x00run\x00"


def _safe(text: str) -> str:
    """A file-name-safe version of a subject id: letters, digits, ``.``, ``_`` and ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")


def format_name(pattern: str, when: datetime.datetime, subject: str, run: object) -> str:
    return pattern.format(
        date=when.strftime("%Y%m%d"), time=when.strftime("%H%M%S"), subject=_safe(subject) or "nosubject", run=run,
    )


def _output_suffixes(formats: Sequence[str]) -> list[str]:
    return [RAW_SUFFIX, SIDECAR_SUFFIX, CONVERTING_SUFFIX] + [f".{f}" for f in formats if f != "raw"]


def first_free_run(directory: Path, pattern: str, when: datetime.datetime, subject: str,
                   formats: Sequence[str]) -> int:
    """One more than the highest run of this pattern (date, subject) already on disk, at least 1."""
    marked = format_name(pattern, when, subject, _RunMarker())
    head, _, tail = marked.rpartition("/")
    parent = directory / head if head else directory
    highest = 0
    if "\x00run\x00" in tail and "\x00run\x00" not in head:
        pieces = [re.escape(piece) for piece in tail.split("\x00run\x00")]
        matcher = re.compile(r"(\d+)".join(pieces) + r"(?:[._]|$)")
        try:
            names = os.listdir(parent)
        except FileNotFoundError:
            names = []
        for name in names:
            match = matcher.match(name)
            if match:
                highest = max(highest, *(int(group) for group in match.groups()))
    run = highest + 1
    while any(directory.joinpath(format_name(pattern, when, subject, run) + suffix).exists()
              for suffix in _output_suffixes(formats)):
        run += 1
    return run


# ------------------------------------------------------------------ the recording sink


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError):
        text = error.strerror or str(error)
        name = errno.errorcode.get(error.errno or 0)
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{text}" + (f" ({name})" if name else "")
    return str(error) or type(error).__name__


def _open_exclusive(path: Path) -> IO[bytes]:
    return open(path, "xb")  # never overwrites: fails if the file exists


def _write_json(path: Path, document: dict[str, Any], exclusive: bool = False) -> None:
    """Write ``document`` atomically (a temporary file renamed over it), synced to disk."""
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
                "unit": physical_unit(signal), "channels": channel_names(signal),
            }
            for signal in metainfo.signals
        ],
    }


class RecordingSink(QueueSink):
    """One recording run: the journal written as ticks arrive, then EDF/BDF/... at ``stop()``.

    ``state`` is ``starting`` (opening its files), ``on``, ``error`` (a write
    failed: reported, nothing more written, streaming goes on), ``stopping``
    (finishing the files) or ``off``.
    """

    def __init__(
        self,
        config: RecordingConfig,
        metainfo: MetaInfo,
        reactor: Any,
        opener: Opener | None = None,
        server: dict[str, Any] | None = None,
        hub: StreamHub | None = None,
    ) -> None:
        packet_rate = metainfo.master_sampling_rate / metainfo.master_block_size
        super().__init__("recording", math.ceil(config.queue_seconds * packet_rate), reactor)
        self.config = config
        self.metainfo = metainfo
        self.idle_seconds = min(config.flush_interval, 0.5)
        self.state = "starting"
        self.error: str | None = None
        self.raw_path: Path | None = None
        self.files: list[Path] = []
        self.written = 0
        self.flushed = 0
        self.discarded = 0
        self.first_packet_id: int | None = None
        self.last_packet_id: int | None = None
        self._opener = opener or _open_exclusive
        self._server = server or {}
        self._hub = hub  # unsubscribed from when writing fails
        self._file: IO[bytes] | None = None
        self._next_flush = 0.0
        self._first_wall: float | None = None
        self._first_timestamp = 0
        self._created = datetime.datetime.now().astimezone()

    @property
    def sidecar_path(self) -> Path | None:
        return None if self.raw_path is None else self.raw_path.with_suffix(SIDECAR_SUFFIX)

    @property
    def seconds(self) -> float:
        """Time covered by what was written."""
        if self.first_packet_id is None or self.last_packet_id is None:
            return 0.0
        rate = self.metainfo.master_sampling_rate / self.metainfo.master_block_size
        return (self.last_packet_id - self.first_packet_id + 1) / rate

    def deliver(self, ticks: Sequence[Tick]) -> None:
        if self._first_wall is None:
            self._first_wall = time.time()  # the wall clock of the first recorded packet
        super().deliver(ticks)

    # -- worker thread

    def opened(self) -> None:
        config = self.config
        directory = Path(config.directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            subject = self.metainfo.subject.id
            run = first_free_run(directory, config.pattern, self._created, subject, config.formats)
            for _ in range(1000):
                stem = directory / format_name(config.pattern, self._created, subject, run)
                stem.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self._file = self._opener(stem.with_name(stem.name + RAW_SUFFIX))
                    break
                except FileExistsError:  # another process took that run meanwhile
                    run += 1
            else:
                raise OSError(errno.EEXIST, "no free run number", str(directory))
            self.raw_path = stem.with_name(stem.name + RAW_SUFFIX)
            assert self.sidecar_path is not None
            _write_json(self.sidecar_path, self._sidecar(), exclusive=True)
        except (OSError, ValueError) as error:
            self._fail(error, "cannot start the recording")
            return
        self._next_flush = time.monotonic() + config.flush_interval
        if self.state == "starting":  # not already told to stop
            self.state = "on"
        self.say("info", "{sink}: recording to {path} (run {run}, formats {formats})",
                 path=str(self.raw_path), run=run, formats=", ".join(config.formats))

    def handle(self, tick: Tick) -> None:
        if self._file is None:
            self.discarded += 1
            return
        header = encode_header(len(tick.body), tick.flags, tick.packet_id, self.written, tick.timestamp)
        try:
            self._file.write(header)
            self._file.write(tick.body)
        except OSError as error:
            self._fail(error, "cannot write the recording")
            return
        self.written += 1
        self.last_packet_id = tick.packet_id
        if self.first_packet_id is None:
            self.first_packet_id = tick.packet_id
            self._first_timestamp = tick.timestamp
            self._rewrite_sidecar()

    def idle(self) -> None:
        if self._file is not None and time.monotonic() >= self._next_flush:
            self._sync()
            self._next_flush = time.monotonic() + self.config.flush_interval

    def closing(self) -> None:
        if self.state != "error":
            self.state = "stopping"
        if self._file is not None:
            self._sync()
        self._close_file()
        if self.raw_path is None or self.sidecar_path is None:
            self.state = "error" if self.error else "off"
            return
        converted = self._convert() if self.written else True
        keep_raw = "raw" in self.config.formats or not converted or self.error is not None
        if keep_raw:
            self.files[:0] = [self.raw_path, self.sidecar_path]
            self._rewrite_sidecar(final=True)
        else:  # only a journal for crash safety: the requested files are complete
            for path in (self.raw_path, self.sidecar_path):
                try:
                    path.unlink()
                except OSError as error:
                    self.say("warn", "{sink}: cannot remove {path}: {error}", path=str(path), error=_describe(error))
        self.say(
            "info", "{sink}: recording stopped: {packets} packets ({seconds:.1f} s), {dropped} dropped; files: {files}",
            packets=self.flushed if self.error else self.written, seconds=self.seconds, dropped=self.dropped,
            files=", ".join(str(p) for p in self.files) or "none",
        )
        self.state = "error" if self.error else "off"

    # -- helpers (worker thread)

    def _sync(self) -> None:
        assert self._file is not None
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self.flushed = self.written
        except OSError as error:
            self._fail(error, "cannot flush the recording")

    def _close_file(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            try:
                handle.close()
            except OSError as error:
                if self.error is None:
                    self._fail(error, "cannot close the recording")

    def _fail(self, error: BaseException, what: str) -> None:
        """Report once, stop writing; the hub keeps streaming to everyone else."""
        first = self.error is None
        if first:
            self.error = f"{what}: {_describe(error)}"
            self.say(
                "error", "{sink}: {error}; nothing more is recorded (kept: {path}, {packets} packets); "
                "streaming goes on",
                error=self.error, path=str(self.raw_path or self.config.directory), packets=self.flushed,
            )
        self.state = "error"
        handle, self._file = self._file, None
        if handle is not None:
            try:
                handle.close()
            except OSError:
                pass  # the buffered tail cannot be written either
        if first:
            self.reactor.callFromThread(self._unsubscribe)

    def _unsubscribe(self) -> None:
        if self._hub is not None:
            self._hub.unsubscribe(self)

    def _sidecar(self, final: bool = False) -> dict[str, Any]:
        started = None
        if self._first_wall is not None:
            started = datetime.datetime.fromtimestamp(self._first_wall).astimezone().isoformat()
        document: dict[str, Any] = {
            "format": RAW_FORMAT,
            "about": "raw: TiA 1.0 data packets (version 3, little-endian float32) as sent, one after "
            "the other; the header's connection number counts the packets in this file. Read with "
            "tia.server.recorder.open_raw or convert with 'tia convert'.",
            "raw": self.raw_path.name if self.raw_path else None,
            "started": started,
            "first_packet_timestamp_us": self._first_timestamp if self.first_packet_id is not None else None,
            "flush_interval": self.config.flush_interval,
            "formats": list(self.config.formats),
            "server": self._server,
            **describe_metainfo(self.metainfo),
            "metainfo_xml": self.metainfo.to_xml().decode("utf-8"),
            "finished": None,
        }
        if final:
            document["finished"] = {
                "ended": datetime.datetime.now().astimezone().isoformat(),
                "packets": self.written,
                "first_packet_id": self.first_packet_id,
                "last_packet_id": self.last_packet_id,
                "dropped": self.dropped,
                "error": self.error,
                "files": [p.name for p in self.files],
            }
        return document

    def _rewrite_sidecar(self, final: bool = False) -> None:
        path = self.sidecar_path
        if path is None:
            return
        try:
            _write_json(path, self._sidecar(final))
        except OSError as error:
            self.say("error", "{sink}: cannot update {path}: {error}", path=str(path), error=_describe(error))

    def _convert(self) -> bool:
        """EDF/BDF/... from the journal, in a child process: its CPU time and memory (the whole
        recording at once) never hold the GIL or the heap of the server, which may go on streaming."""
        assert self.raw_path is not None
        outputs = [self.raw_path.with_suffix(f".{fmt}") for fmt in self.config.formats if fmt != "raw"]
        if not outputs:
            return True
        try:
            result = convert_in_child(self.raw_path, outputs)
        except (RecordingError, OSError) as error:
            self.say(
                "error", "{sink}: cannot write {outputs}: {error}; the raw recording {raw} is kept "
                "(convert it later with: tia convert {raw} -o FILE.bdf)",
                outputs=", ".join(p.name for p in outputs), error=_describe(error), raw=str(self.raw_path),
            )
            return False
        self.files.extend(Path(name) for name in result["files"])
        for note in result["notes"]:
            self.say("warn", "{sink}: {note}", note=note)
        return True


# ------------------------------------------------------------------ reading the journal back


@dataclass
class RawRecording:
    """A journal opened for reading: its sidecar and a packet iterator."""

    path: Path
    sidecar: dict[str, Any]
    metainfo: MetaInfo
    started: datetime.datetime | None
    notes: list[str]

    def packets(self) -> Iterator[DataPacket]:
        """Every complete packet in order; a cut or corrupt tail is noted in ``notes`` and skipped."""
        decoder = PacketStreamDecoder(max_size=1 << 30)
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
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordingError(f"{sidecar_path}: not found (the sidecar of {raw.name})") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise RecordingError(f"{sidecar_path}: not a recording sidecar: {error}") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != RAW_FORMAT:
        raise RecordingError(f"{sidecar_path}: not a {RAW_FORMAT} sidecar")
    if not raw.exists():
        raise RecordingError(f"{raw}: not found")
    try:
        metainfo = MetaInfo.from_xml(str(sidecar["metainfo_xml"]).encode("utf-8"))
    except (KeyError, MetaInfoError) as error:
        raise RecordingError(f"{sidecar_path}: unusable metainfo: {error}") from None
    started = None
    if sidecar.get("started"):
        try:
            started = datetime.datetime.fromisoformat(str(sidecar["started"]))
        except ValueError:
            started = None
    notes = []
    if sidecar.get("finished") is None and not stopping:
        notes.append(f"{raw.name} was not stopped cleanly: recovered up to its last flush")
    return RawRecording(raw, sidecar, metainfo, started, notes)


@dataclass
class Conversion:
    files: list[Path]
    notes: list[str]
    recorder: Recorder


def convert_raw(
    path: str | Path, outputs: Sequence[str | Path], overwrite: bool = False, stopping: bool = False
) -> Conversion:
    """Write a journal as the formats the outputs' suffixes name (.edf, .bdf, .npz, .csv).

    Each output is written in a scratch directory beside it, then linked into
    place; an existing file is never replaced unless ``overwrite``.
    ``stopping``: called by the recorder itself while it stops, not recovering.
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
            for written in recorder.write(scratch / output.name):
                target = output.with_name(written.name)
                _place(written, target, overwrite)
                files.append(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return Conversion(files, notes, recorder)


_CHILD = "import sys; from tia.server.recorder import convert_main; sys.exit(convert_main(sys.argv[1:]))"


def convert_in_child(raw: Path, outputs: Sequence[Path]) -> dict[str, Any]:
    """``convert_raw`` in a new interpreter; returns its ``files`` and ``notes``."""
    import tia

    package_root = str(Path(tia.__file__).resolve().parent.parent)
    path = os.pathsep.join([package_root, *filter(None, [os.environ.get("PYTHONPATH")])])
    process = subprocess.run(
        [sys.executable, "-c", _CHILD, str(raw), *map(str, outputs)],
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
    """The child of ``convert_in_child``: ``RAW OUTPUT...``, one JSON line on stdout."""
    if hasattr(os, "nice"):
        os.nice(10)  # behind the server, should both share a core
    raw, *outputs = argv
    try:
        result = convert_raw(raw, outputs, stopping=True)
    except (RecordingError, OSError, MemoryError, ValueError) as error:
        sys.stdout.write(json.dumps({"error": _describe(error)}) + "\n")  # the parent reads this line
        return 1
    sys.stdout.write(json.dumps({"files": [str(p) for p in result.files], "notes": result.notes}) + "\n")
    return 0


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


# ------------------------------------------------------------------ the server's side


class RecordingStateError(Exception):
    """A request that does not fit the current state (start while recording, ...)."""


class RecordingManager:
    """Starts and stops recording runs of one server; at most one runs at a time."""

    def __init__(self, config: RecordingConfig, hub: StreamHub, reactor: Any,
                 server: dict[str, Any] | None = None, opener: Opener | None = None) -> None:
        self.config = config
        self.hub = hub
        self.reactor = reactor
        self.server = dict(server or {})
        self.opener = opener
        self.current: RecordingSink | None = None
        self.last: RecordingSink | None = None
        self._finishing: set[RecordingSink] = set()

    def start(self) -> RecordingSink:
        current = self.current
        if current is not None and current.state in ("starting", "on"):
            raise RecordingStateError(f"already recording to {current.raw_path or self.config.directory}")
        if current is not None:
            self._finish(current)  # a run that failed: close it, start afresh
        sink = RecordingSink(self.config, self.hub.metainfo, self.reactor, self.opener, self.server, self.hub)
        sink.start()
        self.hub.subscribe(sink)
        self.current = sink
        return sink

    def stop(self) -> Deferred[None]:
        """Stop the current run; fires once its files are complete."""
        sink = self.current
        if sink is None:
            raise RecordingStateError("not recording")
        self.current = None
        return self._finish(sink)

    def stop_all(self) -> Deferred[None]:
        """The server stops: finish the current run and any still finishing."""
        if self.current is not None:
            self.stop()
        waiting = [sink.stop() for sink in tuple(self._finishing)]
        return defer.DeferredList(waiting, consumeErrors=True).addCallback(lambda _: None)

    def _finish(self, sink: RecordingSink) -> Deferred[None]:
        self.hub.unsubscribe(sink)
        self.last = sink
        self._finishing.add(sink)
        if sink.state != "error":
            sink.state = "stopping"

        def finished(result: object) -> object:
            self._finishing.discard(sink)
            return result

        return sink.stop().addBoth(finished)

    def state(self) -> dict[str, Any]:
        sink = self.current or self.last
        report: dict[str, Any] = {"state": "off", "directory": str(self.config.directory),
                                  "formats": list(self.config.formats)}
        if sink is None:
            return report
        report.update(
            state=sink.state,
            path=str(sink.raw_path) if sink.raw_path else None,
            packets=sink.written,
            seconds=round(sink.seconds, 3),
            dropped=sink.dropped,
            error=sink.error,
            files=[str(p) for p in sink.files],
        )
        return report


class RecordingService(Service):
    """[recording] of a running server: a child service of ``TiAService`` (started before the
    first tick, stopped after the last) and the control extension that starts and stops runs."""

    name = "recording"

    def __init__(self, config: RecordingConfig, hub: StreamHub, reactor: Any, server: dict[str, Any]) -> None:
        self.config = config
        self.manager = RecordingManager(config, hub, reactor, server)

    def startService(self) -> None:
        super().startService()
        if self.config.enabled and self.manager.current is None:
            self.manager.start()

    def stopService(self) -> Deferred[None]:
        """After the clock stopped: queued ticks are written and the files completed."""
        super().stopService()
        return self.manager.stop_all()

    def register_commands(self, commands: ControlCommands) -> None:
        """``StartRecording``, ``StopRecording``, ``GetRecordingState`` on the control channel."""
        commands.register(START_RECORDING, self._start)
        commands.register(STOP_RECORDING, self._stop)
        commands.register(GET_RECORDING_STATE, self._state)

    def _refusal(self) -> bytes | None:
        if not self.config.control:
            return build_error("recording control is switched off on this server ([recording] control = off)")
        return None

    def _start(self, session: ServerControlProtocol, message: ControlMessage) -> bytes:
        refusal = self._refusal()
        if refusal is not None:
            return refusal
        try:
            self.manager.start()
        except RecordingStateError as error:
            return build_error(str(error))
        log.info("recording started by {peer}", peer=session.peer_host)
        return OK_REPLY

    def _stop(self, session: ServerControlProtocol, message: ControlMessage) -> bytes:
        refusal = self._refusal()
        if refusal is not None:
            return refusal
        try:
            self.manager.stop()
        except RecordingStateError as error:
            return build_error(str(error))
        log.info("recording stopped by {peer}", peer=session.peer_host)
        return OK_REPLY

    def _state(self, session: ServerControlProtocol, message: ControlMessage) -> bytes:
        refusal = self._refusal()
        if refusal is not None:
            return refusal
        report = self.manager.state()
        return build_message(RECORDING_STATE, report["state"], json.dumps(report).encode("utf-8"))


def attach_recording(service: TiAService) -> RecordingService:
    """Give ``service`` its [recording]: the child service and its control commands."""
    config = service.config
    server = {"control": config.control, "host": socket.gethostname(), "config": config.path}
    recording = RecordingService(config.recording, service.hub, service.reactor, server)
    recording.setServiceParent(service)
    recording.register_commands(service.commands)
    return recording
