"""``tia record``: the stream to .npz, .csv, .edf or .bdf, or as a run of a BIDS-EEG dataset (``--bids``),
for ``--seconds`` or until stopped.

Every way of stopping a recording ends it the same way: Ctrl-C (SIGINT),
SIGTERM (``timeout``, ``kill``, systemd) and SIGHUP (a closed terminal)
close the connection and write what was received as a complete file (or
BIDS run), exit status 0, as the end of ``--seconds`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from tia.cli.common import (
    EXIT_OK,
    CLIError,
    bids_run,
    is_tty,
    metainfo,
    output_path,
    packet_rate,
    session,
    start_streaming,
)
from tia.client.blocking import TiAClient
from tia.client.errors import TiAError
from tia.recording.bids import BIDSRun, write_bids_run
from tia.recording.recorder import Recorder
from tia.recording.writers import write_recording

STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")  # by name: SIGHUP does not exist on Windows


class _Stopped(Exception):
    """Raised by :class:`StopSignals` to leave a blocking wait when a stop signal arrives."""


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP as a request to stop recording and save, while in ``with``.

    A signal is noted in :attr:`received`. The first one also interrupts the
    main thread inside :meth:`interruptible` (connecting, waiting for the
    next packet) by raising :class:`_Stopped` there, but not inside
    :meth:`deferred` (a batch of packets being stored): that is acted on
    after the batch. Nothing ever interrupts the writing of the file.
    Signals are delivered to the main thread only; elsewhere (tests calling
    ``main`` from a thread) nothing is installed. The previous handlers come
    back on exit.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        """The name of the first stop signal, once one arrived."""
        self._interruptible = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                number = getattr(signal, name, None)
                if number is not None:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        first = self.received is None
        if first:
            self.received = signal.Signals(number).name
        if first and self._interruptible:
            raise _Stopped

    def interruptible(self) -> contextlib.AbstractContextManager[None]:
        """Inside, the first stop signal raises :class:`_Stopped`."""
        return self._interrupting(True)

    def deferred(self) -> contextlib.AbstractContextManager[None]:
        """Inside :meth:`interruptible`, a stretch a signal does not interrupt; check :attr:`received` after."""
        return self._interrupting(False)

    @contextlib.contextmanager
    def _interrupting(self, interruptible: bool) -> Iterator[None]:
        outer, self._interruptible = self._interruptible, interruptible
        try:
            yield
        finally:
            self._interruptible = outer


class _Progress:
    """What the user sees on stderr while recording: a bar redrawn at most ten times a second (TTY
    only), gap reports, and otherwise one line once the first packet is in.

    Output never stops a recording: when stderr is gone (a closed terminal), it goes quiet.
    """

    def __init__(self, stream: TextIO, target: int | None, period: Fraction, bar: bool, quiet: bool) -> None:
        self.stream = stream
        self.target = target
        self.period = period
        self.bar = bar and not quiet
        self.quiet = quiet
        self._drawn = 0.0
        self._shown = False
        self._started = False

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # EIO after a hang-up, EPIPE, a closed file
            self.bar = False
            self.quiet = True

    def started(self, where: str, output: str) -> None:
        """The first packet is in; without the bar, say so once (what a log or a waiting script sees)."""
        if self._started:
            return
        self._started = True
        if not self.bar and not self.quiet:
            self._write(f"tia: recording {where} to {output}; Ctrl-C, SIGTERM or SIGHUP stops and saves\n")

    def note(self, text: str) -> None:
        """One line (a gap report), above the bar if it is drawn."""
        self._write(("\r\x1b[K" if self.bar else "") + text + "\n")

    def update(self, recorder: Recorder, force: bool = False) -> None:
        if not self.bar:
            return
        now = time.monotonic()
        if not force and now - self._drawn < 0.1:
            return
        self._drawn = now
        seconds = recorder.duration
        tail = f"{recorder.packets_received} packets  missing {recorder.missing_packets}"
        if self.target:
            total = float(self.target * self.period)
            fraction = min(1.0, recorder.packet_span / self.target)
            filled = round(fraction * 30)
            text = (
                f"\r[{'#' * filled}{'.' * (30 - filled)}] {fraction * 100:3.0f}%"
                f"  {seconds:.1f}/{total:.1f} s  {tail}"
            )
        else:
            text = f"\r{seconds:8.1f} s recorded  {tail}  [Ctrl-C to stop]"
        self._write(text + "\x1b[K")
        self._shown = True

    def finish(self, recorder: Recorder) -> None:
        if self.bar and self._shown:
            self.update(recorder, force=True)
            self._write("\n")


def run(args: argparse.Namespace) -> int:
    """Record the stream for a while, or until stopped, and write it in the format the file suffix names
    (or as the next run of the BIDS dataset ``--bids`` names)."""
    output: BIDSRun | Path = bids_run(args) or output_path(args.output, args.force)
    destination = output.describe() if isinstance(output, BIDSRun) else str(output)
    err = sys.stderr
    with StopSignals() as stop:
        recorder: Recorder | None = None
        failure: str | None = None
        progress: _Progress | None = None
        try:
            with stop.interruptible(), session(args) as client:
                meta = metainfo(client)
                recorder = Recorder(meta)
                target = None
                if args.seconds is not None:
                    target = max(1, round(args.seconds * packet_rate(meta)))
                progress = _Progress(err, target, recorder.packet_period, is_tty(err), args.quiet)
                start_streaming(client, args.server)
                failure = _receive(client, recorder, target, progress, stop, f"{args.server}", destination)
        except _Stopped:
            pass
        if recorder is None or recorder.packets_received == 0:
            stopped = f"stopped by {stop.received} before the first packet" if stop.received else None
            raise CLIError(failure or stopped or "no packet was recorded")
        # signals now are only noted: the file (or run) is written whole
        if isinstance(output, BIDSRun):
            files = write_bids_run(recorder, output)
        else:
            files = write_recording(recorder, output)
    assert progress is not None  # set before the first packet
    progress.finish(recorder)
    summary = (
        f"recorded {recorder.duration:.3f} s from {args.server}: {recorder.packets_received}"
        f" packets, {recorder.missing_packets} missing, {len(recorder.events)} events"
    )
    sys.stdout.write(summary + "\n")
    for path in files:
        sys.stdout.write(f"wrote {path}\n")
    if recorder.missing_packets or recorder.missing_blocks:
        err.write(
            f"tia: warning: {recorder.missing_packets} packets and {recorder.missing_blocks}"
            f" signal blocks were missing ({len(recorder.gaps)} gaps); they are stored as NaN"
            " (EDF/BDF: physical minimum, annotated BAD_ACQ_SKIP), not filled in\n"
        )
    if failure is not None:
        raise CLIError(f"{failure} (kept what was recorded before)")
    return EXIT_OK


def _receive(
    client: TiAClient, recorder: Recorder, target: int | None, progress: _Progress, stop: StopSignals,
    where: str, output: str,
) -> str | None:
    """Feed packets to ``recorder`` until ``target`` packets, a stop signal or a failure (returned)."""
    while target is None or recorder.packet_span < target:
        try:
            batch = client.get_data()
        except TiAError as error:
            return str(error)
        if not batch:
            return "the server closed the data connection"
        with stop.deferred():
            for packet in batch:
                first = recorder.first_packet_id
                if target is not None and first is not None and packet.packet_id - first + 1 > target:
                    break
                for gap in recorder.feed(packet):
                    progress.note(f"tia: {gap.describe(recorder.packet_period)}")
            progress.started(where, output)
            progress.update(recorder)
        if stop.received:
            break
    return None
