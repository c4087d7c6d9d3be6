"""One run of a server's recording: :class:`RecordingSink`, a threaded hub subscriber writing the journal.

The sink is one more subscriber of the stream hub (a
:class:`~tia.server.sink.QueueSink`: bounded, never delaying anyone, its
overflow dropped, counted and logged). Its worker appends every tick to the
raw journal ``NAME.tia`` (:mod:`tia.recording.journal`) and, every
``flush_interval`` seconds, flushes and ``fsync``-s it, so a crash loses at
most that much (plus whatever was still buffered). At a graceful stop,
EDF+/BDF+ (and NPZ/CSV, and a BIDS run) are written from the journal by a
child process, with the writers ``tia record`` uses; after a crash ``tia
convert NAME.tia -o NAME.bdf`` (or ``--bids ROOT ...``) does it. EDF cannot
be appended as it goes: its header holds the record count and each
channel's physical range, which come from the data.

A failure (no permission, disk full, ...) is reported once, ends the run
(state ``error``, nothing more written) and unsubscribes the sink; the
server streams on.
"""

from __future__ import annotations

import datetime
import errno
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tia.config import RecordingConfig
from tia.protocol.metainfo import MetaInfo
from tia.protocol.packet import encode_header
from tia.recording.bids import BIDSRun
from tia.recording.journal import (
    RAW_SUFFIX,
    SIDECAR_SUFFIX,
    convert_in_child,
    describe_error,
    sidecar,
    write_json,
)
from tia.recording.names import first_free_run, format_name
from tia.recording.recorder import RecordingError
from tia.server.sink import QueueSink
from tia.server.tick import Tick

if TYPE_CHECKING:
    from tia.server.hub import StreamHub

__all__ = ["Opener", "RecordingSink"]

Opener = Callable[[Path], IO[bytes]]
"""Opens a new journal for writing (tests inject failing or slow files)."""


def _open_exclusive(path: Path) -> IO[bytes]:
    return open(path, "xb")  # never overwrites: fails if the file exists


class RecordingSink(QueueSink):
    """One recording run: the journal written as ticks arrive, then EDF/BDF/... at ``stop()``.

    ``state`` is ``starting`` (opening its files), ``on``, ``error`` (a write
    failed: reported, nothing more written, streaming goes on), ``stopping``
    (finishing the files) or ``off``. The worker wakes once per
    ``flush_interval`` (or when its buffer is half full) and syncs the
    journal on that schedule.
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
        self.wake_seconds = config.flush_interval
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
            write_json(self.sidecar_path, self._sidecar(), exclusive=True)
        except (OSError, ValueError) as error:
            self._fail(error, "cannot start the recording")
            return
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

    def periodic(self) -> None:
        if self._file is not None:
            self._sync()

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
                    self.say("warn", "{sink}: cannot remove {path}: {error}", path=str(path),
                             error=describe_error(error))
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
            self.error = f"{what}: {describe_error(error)}"
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
            started = datetime.datetime.fromtimestamp(self._first_wall).astimezone()
        finished = None
        if final:
            finished = {
                "ended": datetime.datetime.now().astimezone().isoformat(),
                "packets": self.written,
                "first_packet_id": self.first_packet_id,
                "last_packet_id": self.last_packet_id,
                "dropped": self.dropped,
                "error": self.error,
                "files": [p.name for p in self.files],
            }
        return sidecar(
            self.metainfo, self.raw_path, started=started,
            first_timestamp=self._first_timestamp if self.first_packet_id is not None else None,
            flush_interval=self.config.flush_interval, formats=self.config.formats, server=self._server,
            finished=finished, sample_order=self._hub.layout.sample_order if self._hub is not None else "channel-major",
        )

    def _rewrite_sidecar(self, final: bool = False) -> None:
        path = self.sidecar_path
        if path is None:
            return
        try:
            write_json(path, self._sidecar(final))
        except OSError as error:
            self.say("error", "{sink}: cannot update {path}: {error}", path=str(path), error=describe_error(error))

    def _convert(self) -> bool:
        """EDF/BDF/... and the BIDS run from the journal, in a child process (see ``convert_in_child``)."""
        assert self.raw_path is not None
        formats = self.config.formats
        outputs = [self.raw_path.with_suffix(f".{fmt}") for fmt in formats if fmt not in ("raw", "bids")]
        if not outputs and "bids" not in formats:
            return True
        wanted = [p.name for p in outputs] + (["a BIDS run"] if "bids" in formats else [])
        try:
            bids = self._bids_run() if "bids" in formats else None
            result = convert_in_child(self.raw_path, outputs, bids)
        except (RecordingError, OSError) as error:
            config = self.config
            later = "-o FILE.bdf" if outputs else (
                f"--bids {config.bids_root} --subject {self.metainfo.subject.id} --task {config.task}"
                + (f" --session {config.session}" if config.session else ""))
            self.say(
                "error", "{sink}: cannot write {outputs}: {error}; the raw recording {raw} is kept "
                "(convert it later with: tia convert {raw} {later})",
                outputs=", ".join(wanted), error=describe_error(error), raw=str(self.raw_path), later=later,
            )
            return False
        self.files.extend(Path(name) for name in result["files"])
        for note in result["notes"]:
            self.say("warn", "{sink}: {note}", note=note)
        return True

    def _bids_run(self) -> BIDSRun:
        """``formats = bids``: the next run of ``[subject] id`` in ``bids_root``."""
        config = self.config
        return BIDSRun(Path(config.bids_root or "."), self.metainfo.subject.id, config.task, config.session or None,
                       None, config.bids_format, config.line_freq)
