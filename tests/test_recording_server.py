"""Server-side recording ([recording], tia.recording) on a real reactor and real files.

A ramp server records itself; the journal, EDF, BDF and NPZ are read back
sample by sample and event by event. Failures are real where the machine
allows (a directory under a regular file; as root, a read-only or a full
tmpfs mounted for the test) and otherwise injected through the recorder's
file opener (permission, disk full, a writer too slow for its queue); each
must be logged once and shown by ``tia recording status`` while a TCP client
keeps streaming, exact. Tests wait for ticks and log lines, not for time.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import IO, Any

import edfio
import numpy as np
import pytest
from support import (
    MARKERS,
    ControlClient,
    LogCapture,
    config_from_text,
    ramp_config,
    ramp_values,
    tcp_connect,
    ticks,
    until,
)
from twisted.internet import threads
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial import unittest

from tia import cli
from tia.client.blocking import TiAClient
from tia.client.errors import TiAError
from tia.client.recording_control import recording_request
from tia.config import ConfigError
from tia.daemon import build_service
from tia.protocol.control import ControlMessage
from tia.protocol.packet import DataPacket
from tia.recording.journal import open_raw
from tia.recording.names import first_free_run
from tia.recording.service import missing_writer
from tia.recording.sink import RecordingSink
from tia.server.service import TiAService

CHANNELS, BLOCK, RATE = 4, 10, 1000
EEG, EVENT = 0x1, 0x200000
EVENT_TICKS = 10  # interval 0.1 s at 100 packets/s
NO_EDFIO = "recording BDF needs edfio: pip install 'txtia[record]'"


def recording_config(directory: Path, server_extra: str = "", **keys: object) -> Any:
    lines = "\n".join(f"{key} = {value}" for key, value in {"directory": directory, **keys}.items())
    return ramp_config(rate=RATE, blocksize=BLOCK, channels=CHANNELS, server_extra=server_extra,
                       extra=MARKERS + "\n[recording]\n" + lines)


def scratch(testcase: unittest.TestCase) -> Path:
    """A temporary directory removed after the test (trial's mktemp is relative to the working directory)."""
    path = Path(tempfile.mkdtemp(prefix="tia-recording-"))
    testcase.addCleanup(shutil.rmtree, path, True)
    return path


def today() -> str:
    return datetime.datetime.now().strftime("%Y%m%d")


def mount_tmpfs(testcase: unittest.TestCase, where: Path, options: str) -> None:
    """A tmpfs mounted on ``where`` until the test ends; SkipTest, with the reason, where that cannot be."""
    where.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tia-test", str(where)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise unittest.SkipTest(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
    testcase.addCleanup(subprocess.run, ["umount", "-l", str(where)], check=False)


def block_edfio(testcase: unittest.TestCase) -> None:
    """``import edfio`` fails, as without the [record] extra, until the test ends."""
    patch = pytest.MonkeyPatch()
    testcase.addCleanup(patch.undo)
    patch.setitem(sys.modules, "edfio", None)


def stream_some(port: int, seconds: float = 0.4) -> list[Any]:
    """A blocking TCP client's packets for a while (run in a thread)."""
    import time

    packets = []
    with TiAClient("127.0.0.1", port, timeout=5) as client:
        assert client.cmd_get_metainfo()
        ok, data_port = client.cmd_get_data_connection_tcp()
        assert ok and client.start_streaming_data_tcp("127.0.0.1", data_port)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            packets.extend(client.get_data(timeout=5))
    return packets


def check_ramp_packets(testcase: unittest.TestCase, packets: list[Any]) -> None:
    """Consecutive packet ids, each EEG block exactly the ramp."""
    testcase.assertTrue(packets)
    ids = [p.packet_id for p in packets]
    testcase.assertEqual(ids, list(range(ids[0], ids[0] + len(ids))))
    for packet in packets:
        block = packet.signals[EEG] if isinstance(packet, DataPacket) else packet.arrays[0]
        np.testing.assert_array_equal(block, ramp_values(CHANNELS, packet.packet_id * BLOCK, BLOCK))


class _Gate:
    """A file wrapper whose writes can fail (disk full) or wait (a slow disk)."""

    def __init__(self, path: Path, fail_after: int | None = None, gate: threading.Event | None = None) -> None:
        self.file: IO[bytes] = open(path, "xb")
        self.fail_after = fail_after
        self.gate = gate
        self.written = 0

    def write(self, data: bytes) -> int:
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_after is not None and self.written + len(data) > self.fail_after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    def fileno(self) -> int:
        return self.file.fileno()

    def close(self) -> None:
        self.file.close()


class RecordingTestCase(unittest.TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.directory = scratch(self) / "recordings"
        self.log = LogCapture(self)

    def start(self, opener: Callable[[Path], Any] | None = None, server_extra: str = "", **keys: object) -> TiAService:
        service = build_service(recording_config(self.directory, server_extra, **keys))
        if opener is not None:
            service.getServiceNamed("recording").manager.opener = opener
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        return service

    def files(self) -> dict[str, Path]:
        return {path.suffix: path for path in self.directory.iterdir()}

    # ---------------------------------------------------------------- round trips

    @inlineCallbacks
    def test_ramp_and_events_round_trip_raw_bdf_edf_npz(self) -> Any:
        service = self.start(enabled="on", formats="bdf, edf, npz, raw", flush_interval=0.2)
        yield ticks(service, 100)
        yield service.stopService()
        files = self.files()
        stem = f"{today()}_T01_run01"
        self.assertEqual(sorted(files), [".bdf", ".edf", ".json", ".npz", ".tia"])
        self.assertTrue(all(path.name.startswith(stem + ".") for path in files.values()))

        recording = open_raw(files[".tia"])
        packets = list(recording.packets())
        self.assertEqual(recording.notes, [])
        self.assertEqual(packets[0].packet_id, 0)  # recording from the first tick
        check_ramp_packets(self, packets)
        self.assertGreaterEqual(len(packets), 50)
        count = len(packets)
        event_packets = [(p.packet_id, float(p.signals[EVENT][0, 0])) for p in packets if EVENT in p.signals]
        expected_ids = list(range(EVENT_TICKS, count, EVENT_TICKS))
        self.assertEqual([pid for pid, _ in event_packets], expected_ids)
        codes = [5.0 if n % 2 else 6.0 for n in range(1, len(expected_ids) + 1)]
        self.assertEqual([code for _, code in event_packets], codes)

        sidecar = json.loads(files[".json"].read_text())
        self.assertEqual(sidecar["finished"]["packets"], count)
        self.assertEqual(sidecar["finished"]["dropped"], 0)
        self.assertEqual(sidecar["signals"][0]["channels"], [f"eeg{c}" for c in range(1, CHANNELS + 1)])
        self.assertEqual(sidecar["subject"]["id"], "T01")

        expected = np.array(ramp_values(CHANNELS, 0, count * BLOCK))
        readers: list[tuple[str, Callable[[Path], Any], int]] = [
            (".bdf", edfio.read_bdf, 2**24), (".edf", edfio.read_edf, 2**16),
        ]
        for suffix, reader, step in readers:
            document = reader(files[suffix])
            self.assertEqual(document.labels, tuple(f"EEG eeg{c}" for c in range(1, CHANNELS + 1)))
            for channel, signal in enumerate(document.signals):
                self.assertAlmostEqual(signal.sampling_frequency, RATE, places=6)
                self.assertEqual(signal.physical_dimension, "uV")
                data = signal.data[: count * BLOCK]
                span = expected[channel].max() - expected[channel].min() + 2
                np.testing.assert_allclose(data, expected[channel], rtol=0, atol=span / step)
            events = [a for a in document.annotations if not a.text.startswith("BAD_ACQ_SKIP")]
            self.assertEqual([a.text for a in events], [f"trigger={code:g}" for _, code in event_packets])
            for annotation, (pid, _) in zip(events, event_packets, strict=True):
                self.assertAlmostEqual(annotation.onset, pid * BLOCK / RATE, places=9)  # sample-accurate
        archive = np.load(files[".npz"])
        np.testing.assert_array_equal(archive["eeg"], expected.astype(np.float32))  # lossless
        self.assertEqual(list(archive["events"]["sample"]), [pid * BLOCK for pid, _ in event_packets])

    @inlineCallbacks
    def test_a_sample_major_server_is_recorded_and_read_back_exactly(self) -> Any:
        """The journal keeps the packets as sent; its sidecar says how they lay out each block."""
        service = self.start(server_extra="sample_order = sample-major", enabled="on", formats="npz, raw")
        yield ticks(service, 40)
        yield service.stopService()
        files = self.files()
        self.assertEqual(json.loads(files[".json"].read_text())["sample_order"], "sample-major")
        packets = list(open_raw(files[".tia"]).packets())
        check_ramp_packets(self, packets)
        expected = np.array(ramp_values(CHANNELS, 0, len(packets) * BLOCK), dtype=np.float32)
        np.testing.assert_array_equal(np.load(files[".npz"])["eeg"], expected)

    @inlineCallbacks
    def test_without_raw_only_the_requested_files_stay(self) -> Any:
        service = self.start(enabled="on", formats="bdf")
        yield ticks(service, 40)
        yield service.stopService()
        self.assertEqual(sorted(self.files()), [".bdf"])
        signal = edfio.read_bdf(self.files()[".bdf"]).signals[0]
        self.assertEqual(signal.data[0], 1000.0)

    # ---------------------------------------------------------------- run numbers, control, CLI

    @inlineCallbacks
    def test_runs_are_numbered_and_never_overwritten_control_and_cli(self) -> Any:
        self.directory.mkdir(parents=True)
        (self.directory / f"{today()}_T01_run07.bdf").write_bytes(b"someone else's")
        (self.directory / f"{today()}_T02_run09.tia").write_bytes(b"another subject")
        service = self.start(formats="raw", flush_interval=0.2)
        port = service.control_port
        status = yield threads.deferToThread(recording_request, "127.0.0.1", port, "status", 5)
        self.assertIn("recording: off", status)

        started = yield threads.deferToThread(recording_request, "127.0.0.1", port, "start", 5)
        self.assertIn("recording: on", started)
        self.assertIn(f"{today()}_T01_run08.tia", started)
        refused = yield threads.deferToThread(cli.main, ["recording", "start", f"127.0.0.1:{port}"])
        self.assertEqual(refused, 1)  # already recording
        yield ticks(service, 30)
        stopped = yield threads.deferToThread(recording_request, "127.0.0.1", port, "stop", 5)
        self.assertIn("recording: off", stopped)
        self.assertNotIn("error", stopped)
        again = yield threads.deferToThread(cli.main, ["recording", "stop", f"127.0.0.1:{port}"])
        self.assertEqual(again, 1)  # not recording

        code = yield threads.deferToThread(cli.main, ["recording", "start", f"127.0.0.1:{port}"])
        self.assertEqual(code, 0)
        yield ticks(service, 20)
        code = yield threads.deferToThread(cli.main, ["recording", "stop", f"127.0.0.1:{port}"])
        self.assertEqual(code, 0)
        names = sorted(path.name for path in self.directory.iterdir())
        self.assertEqual(names, sorted([
            f"{today()}_T01_run07.bdf", f"{today()}_T02_run09.tia",
            f"{today()}_T01_run08.tia", f"{today()}_T01_run08.json",
            f"{today()}_T01_run09.tia", f"{today()}_T01_run09.json",
        ]))
        self.assertEqual((self.directory / f"{today()}_T01_run07.bdf").read_bytes(), b"someone else's")
        for run in ("08", "09"):
            check_ramp_packets(self, list(open_raw(self.directory / f"{today()}_T01_run{run}.tia").packets()))

    def test_first_free_run_follows_the_highest_and_skips_taken_names(self) -> None:
        directory = scratch(self)
        (directory / "S01").mkdir(parents=True)
        when = datetime.datetime(2024, 1, 31, 12, 0, 0)
        pattern = "{subject}/{date}_run{run:03d}"
        self.assertEqual(first_free_run(directory, pattern, when, "S01", ("bdf", "raw")), 1)
        (directory / "S01" / "20240131_run004_events.csv").touch()
        (directory / "S01" / "20240130_run010.bdf").touch()  # another day: its own numbering
        self.assertEqual(first_free_run(directory, pattern, when, "S01", ("bdf", "raw")), 5)
        self.assertEqual(first_free_run(directory, "{date}_{subject}_run{run}", when, "a/b c", ("edf",)), 1)

    @inlineCallbacks
    def test_control_can_be_switched_off(self) -> Any:
        service = self.start(formats="raw", control="off")
        reply = yield threads.deferToThread(cli.main, ["recording", "start", f"127.0.0.1:{service.control_port}"])
        self.assertEqual(reply, 1)
        self.assertFalse(self.directory.exists())

    # ---------------------------------------------------------------- flushing

    @inlineCallbacks
    def test_everything_older_than_the_flush_interval_is_on_disk(self) -> Any:
        service = self.start(enabled="on", formats="raw", flush_interval=0.2)
        yield ticks(service, 50)
        sent, since = service.hub.ticks_sent, time.monotonic()
        sink = service.getServiceNamed("recording").manager.current
        assert sink is not None
        yield until(lambda: sink.flushed >= sent)
        self.assertLess(time.monotonic() - since, 0.2 + 0.6)  # the flush interval, and a generous margin
        raw = next(self.directory.glob("*.tia"))
        on_disk = list(open_raw(raw).packets())  # read by another file object while recording
        self.assertGreaterEqual(len(on_disk), sent)
        check_ramp_packets(self, on_disk)

    # ---------------------------------------------------------------- failures: reported, streaming goes on

    @inlineCallbacks
    def check_failure_shown(self, service: TiAService, reason: str) -> Generator[Deferred[Any], Any, None]:
        """What the user sees of a failed run: one error line (with ``reason``) saying streaming goes on,
        ``tia recording status`` in state ``error`` with the reason, and TCP clients still exact."""
        yield self.log.wait_for("error", reason)
        packets = yield threads.deferToThread(stream_some, service.control_port)
        check_ramp_packets(self, packets)
        state = yield threads.deferToThread(recording_request, "127.0.0.1", service.control_port, "status", 5)
        self.assertIn("recording: error", state)
        self.assertIn(reason, state)
        errors = self.log.find("error", reason)
        self.assertEqual(len(errors), 1, self.log.lines)
        self.assertIn("streaming goes on", errors[0])
        self.assertNotIn(service.getServiceNamed("recording").manager.current, service.hub.subscribers)

    @inlineCallbacks
    def test_permission_error_is_reported_and_streaming_continues(self) -> Any:
        def forbidden(path: Path) -> IO[bytes]:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

        service = self.start(opener=forbidden, enabled="on", formats="bdf, raw")
        yield self.check_failure_shown(service, "Permission denied (EACCES)")
        self.assertIn("cannot start the recording", self.log.find("error", "Permission denied")[0])

    @inlineCallbacks
    def test_read_only_directory_is_reported(self) -> Any:
        """chmod 500 as a user; root writes through that, so as root the directory is a read-only tmpfs."""
        if os.geteuid() == 0:
            mount_tmpfs(self, self.directory, "ro,size=16k")
            reason = "Read-only file system (EROFS)"
        else:
            self.directory.mkdir(parents=True)
            self.directory.chmod(0o500)
            self.addCleanup(self.directory.chmod, 0o700)
            reason = "Permission denied (EACCES)"
        service = self.start(enabled="on", formats="raw")
        yield self.check_failure_shown(service, reason)
        self.assertIn(f"cannot start the recording: {self.directory}/", self.log.find("error", reason)[0])

    @inlineCallbacks
    def test_directory_under_a_regular_file_is_reported(self) -> Any:
        """Unwritable for root too: a path through a regular file."""
        self.directory.parent.joinpath("a-file").write_bytes(b"")
        self.directory = self.directory.parent / "a-file" / "recordings"
        service = self.start(enabled="on", formats="bdf, raw")
        yield self.check_failure_shown(service, f"{self.directory}: Not a directory (ENOTDIR)")

    @inlineCallbacks
    def test_full_file_system_is_reported_and_what_was_written_is_kept(self) -> Any:
        """A real ENOSPC from the kernel: the recording directory is a 16 kB tmpfs (root only)."""
        if os.geteuid() != 0:
            raise unittest.SkipTest("mounting a tmpfs needs root")
        mount_tmpfs(self, self.directory, "size=16k")
        service = self.start(enabled="on", formats="raw", flush_interval=0.1)
        yield self.check_failure_shown(service, "No space left on device (ENOSPC)")
        yield service.stopService()
        kept = list(open_raw(next(self.directory.glob("*.tia"))).packets())
        self.assertTrue(kept)
        self.assertEqual(kept[0].packet_id, 0)
        check_ramp_packets(self, kept)

    @inlineCallbacks
    def test_disk_full_is_reported_streaming_continues_and_what_was_written_is_kept(self) -> Any:
        limit = 40 * (33 + 4 + 4 * CHANNELS * BLOCK) + 500  # about 40 packets fit
        service = self.start(opener=lambda path: _Gate(path, fail_after=limit), enabled="on", formats="bdf, raw",
                             flush_interval=0.1)
        yield self.log.wait_for("error", "No space left on device")
        errors = self.log.find("error", "No space left on device")
        self.assertEqual(len(errors), 1, self.log.lines)
        self.assertIn("ENOSPC", errors[0])
        packets = yield threads.deferToThread(stream_some, service.control_port)
        check_ramp_packets(self, packets)
        yield service.stopService()
        kept = list(open_raw(next(self.directory.glob("*.tia"))).packets())
        self.assertGreater(len(kept), 20)
        self.assertLessEqual(len(kept) * (33 + 4 + 4 * CHANNELS * BLOCK), limit)  # nothing after the error
        check_ramp_packets(self, kept)
        self.assertTrue(list(self.directory.glob("*.bdf")))  # what was written is converted too

    @inlineCallbacks
    def test_queue_overflow_is_counted_logged_and_visible_as_a_gap(self) -> Any:
        gate = threading.Event()
        service = self.start(opener=lambda path: _Gate(path, gate=gate), enabled="on", formats="bdf, raw",
                             queue_seconds=0.05)
        yield ticks(service, 60)  # the writer is stuck: 16 ticks fit in its queue, the rest are dropped
        sink = service.getServiceNamed("recording").manager.current
        assert isinstance(sink, RecordingSink)
        self.assertGreater(sink.dropped, 10)
        self.assertTrue(self.log.find("warn", "queue full"), self.log.lines)
        packets = yield threads.deferToThread(stream_some, service.control_port, 0.2)
        check_ramp_packets(self, packets)  # the network client lost nothing meanwhile
        gate.set()
        yield ticks(service, 40)  # the writer catches up; what it missed is a gap in the middle
        dropped = sink.dropped
        yield service.stopService()
        self.assertEqual(sink.dropped, dropped)
        kept = list(open_raw(next(self.directory.glob("*.tia"))).packets())
        ids = [p.packet_id for p in kept]
        self.assertEqual(ids[0], 0)
        self.assertEqual(len(ids) + dropped, ids[-1] + 1)
        for packet in kept:
            np.testing.assert_array_equal(packet.signals[EEG], ramp_values(CHANNELS, packet.packet_id * BLOCK, BLOCK))
        self.assertEqual(json.loads(next(self.directory.glob("*.json")).read_text())["finished"]["dropped"],
                         sink.dropped)
        annotations = edfio.read_bdf(next(self.directory.glob("*.bdf"))).annotations
        self.assertTrue([a for a in annotations if a.text == "BAD_ACQ_SKIP"])

    # ---------------------------------------------------------------- without the [record] extra

    @inlineCallbacks
    def test_start_recording_without_edfio_is_one_line_naming_the_extra(self) -> Any:
        service = self.start(formats="bdf, raw")
        block_edfio(self)
        control = yield tcp_connect(service.control_port, ControlClient())
        self.addCleanup(control.transport.loseConnection)
        reply = yield control.request("StartRecording")
        self.assertEqual(reply, ControlMessage("Error", NO_EDFIO))  # on the wire: Error -- recording BDF needs ...
        with self.assertRaises(TiAError) as raised:
            yield threads.deferToThread(recording_request, "127.0.0.1", service.control_port, "start", 5)
        self.assertEqual(str(raised.exception), f"the server refused StartRecording: {NO_EDFIO}")
        state = yield threads.deferToThread(recording_request, "127.0.0.1", service.control_port, "status", 5)
        self.assertIn("recording: error", state)
        self.assertIn(f"error:     {NO_EDFIO}", state)
        packets = yield threads.deferToThread(stream_some, service.control_port)
        check_ramp_packets(self, packets)
        self.assertIsNone(service.getServiceNamed("recording").manager.current)
        self.assertFalse(self.directory.exists())

    @inlineCallbacks
    def test_enabled_without_edfio_logs_one_line_and_streams(self) -> Any:
        """The INI loader refuses this (tests/test_extras.py); a config built otherwise reaches the service."""
        config = recording_config(self.directory, enabled="on", formats="bdf")
        block_edfio(self)
        service = build_service(config)
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        errors = self.log.find("error", "needs edfio")
        self.assertEqual(errors, [f"[recording] enabled: {NO_EDFIO}; the server streams without recording"])
        packets = yield threads.deferToThread(stream_some, service.control_port)
        check_ramp_packets(self, packets)
        state = yield threads.deferToThread(recording_request, "127.0.0.1", service.control_port, "status", 5)
        self.assertIn(f"error:     {NO_EDFIO}", state)
        self.assertFalse(self.directory.exists())

    def test_missing_writer_names_the_formats_needing_edfio(self) -> None:
        self.assertIsNone(missing_writer(("bdf", "raw")))  # edfio is installed here
        block_edfio(self)
        self.assertEqual(missing_writer(("edf", "raw", "bdf")),
                         "recording EDF/BDF needs edfio: pip install 'txtia[record]'")
        self.assertIsNone(missing_writer(("raw", "npz", "csv")))

    # ---------------------------------------------------------------- tia convert

    @inlineCallbacks
    def test_tia_convert_writes_edf_and_refuses_to_overwrite(self) -> Any:
        service = self.start(enabled="on", formats="raw")
        yield ticks(service, 40)
        yield service.stopService()
        raw = next(self.directory.glob("*.tia"))
        output = self.directory / "converted.edf"
        self.assertEqual(cli.main(["convert", str(raw), "-o", str(output)]), 0)
        document = edfio.read_edf(output)
        self.assertEqual(document.signals[0].label, "EEG eeg1")
        self.assertAlmostEqual(document.signals[0].data[0], 1000.0, places=1)
        self.assertEqual(cli.main(["convert", str(raw.with_suffix("")), "-o", str(output)]), 2)
        self.assertEqual(cli.main(["convert", str(raw.with_suffix(".json")), "-o", str(output), "-f"]), 0)
        self.assertEqual(cli.main(["convert", str(raw), "-o", str(self.directory / "x.txt")]), 2)

    @inlineCallbacks
    def test_mne_reads_channel_names_units_rates_and_events(self) -> Any:
        try:
            import mne
        except ImportError:
            raise unittest.SkipTest("mne is not installed (only used to check the files)") from None
        service = self.start(enabled="on", formats="bdf")
        yield ticks(service, 60)
        yield service.stopService()
        raw = mne.io.read_raw_bdf(next(self.directory.glob("*.bdf")), preload=True, infer_types=True, verbose="error")
        self.assertEqual(raw.ch_names, [f"eeg{c}" for c in range(1, CHANNELS + 1)])
        self.assertEqual(raw.get_channel_types(), ["eeg"] * CHANNELS)
        self.assertEqual(raw.info["sfreq"], RATE)
        self.assertAlmostEqual(raw.get_data()[0][0], 1000e-6, places=9)  # uV, read as volts
        onsets = [o for o, d in zip(raw.annotations.onset, raw.annotations.description, strict=True)
                  if d.startswith("trigger")]
        self.assertEqual(onsets[:2], [0.1, 0.2])


class RecordingConfigTests(unittest.TestCase):
    def parse(self, lines: str) -> Any:
        return config_from_text(
            "[source:eeg]\ndriver = ramp\nrate = 100\nchannels = 1\ntype = eeg\n[recording]\n" + lines
        )

    def test_defaults_are_off_bdf_and_raw(self) -> None:
        recording = ramp_config().recording
        self.assertFalse(recording.enabled)
        self.assertEqual(recording.formats, ("bdf", "raw"))
        self.assertEqual(recording.pattern, "{date}_{subject}_run{run:02d}")
        self.assertEqual(recording.flush_interval, 1.0)
        config = self.parse(
            "enabled = on\nformats = EDF, raw, npz\nflush_interval = 0.5\npattern = {subject}/{date}_{run}"
        )
        self.assertTrue(config.recording.enabled)
        self.assertEqual(config.recording.formats, ("edf", "raw", "npz"))
        self.assertEqual(config.recording.flush_interval, 0.5)

    def test_errors_name_section_and_key(self) -> None:
        cases = {
            "pattern = {date}_{subject}": "[recording] pattern: needs {run}",
            "pattern = {date}_{nobody}_{run}": "[recording] pattern: unknown field {nobody}",
            "pattern = ../{run}": "[recording] pattern: ",
            "formats = bdf, gdf": "[recording] formats: 'gdf' is not one of",
            "formats = bdf, bdf": "[recording] formats: bdf is listed twice",
            "flush_interval = 0": "[recording] flush_interval: '0' must be a positive number",
            "enabled = maybe": "[recording] enabled: 'maybe' is not on or off",
            "directroy = x": "[recording] directroy: unknown key",
        }
        for line, message in cases.items():
            with self.assertRaises(ConfigError) as raised:
                self.parse(line)
            self.assertIn(message, str(raised.exception), line)

    def test_lsl_section(self) -> None:
        self.assertFalse(ramp_config().lsl.outlets)
        with self.assertRaises(ConfigError) as raised:
            config_from_text("[source:eeg]\ndriver = ramp\nrate = 100\nchannels = 1\ntype = eeg\n[lsl]\nnmae = x\n")
        self.assertIn("[lsl] nmae: unknown key", str(raised.exception))
