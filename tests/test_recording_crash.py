"""A recording daemon killed with SIGKILL: the journal holds every packet up to its last flush.

``twistd -n tia`` records a ramp (with [recording] enabled in its INI) for
about two seconds and is killed with ``kill -9``: no shutdown code runs. The
raw journal must then read back gap-free and exact from the first packet to
at least one flush interval before the kill, and ``tia convert`` must turn it
into an EDF file that edfio reads.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import edfio
import numpy as np
import pytest
from support import free_port, ramp_values, wait_for

from tia import cli
from tia.recording.journal import open_raw

CHANNELS, BLOCK, RATE = 3, 10, 1000
FLUSH = 0.25
INI = """\
[server]
control = tcp:{port}:interface=127.0.0.1

[subject]
id = K9

[source:eeg]
driver = ramp
rate = {rate}
blocksize = {block}
type = eeg
channels = {channels}

[source:markers]
driver = events
channels = trigger:event
interval = 0.5
codes = 3

[recording]
enabled = on
directory = {directory}
formats = edf, raw
flush_interval = {flush}
"""


@pytest.mark.slow
def test_kill_9_leaves_a_readable_journal_up_to_the_last_flush(tmp_path: Path) -> None:
    directory = tmp_path / "recordings"
    config = tmp_path / "crash.ini"
    config.write_text(INI.format(port=free_port(), rate=RATE, block=BLOCK, channels=CHANNELS,
                                 directory=directory, flush=FLUSH))
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "twisted", "tia", "--config", str(config)],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    def journal_written() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the daemon ended before recording:\n{log_path.read_text()}")
        return any(path.stat().st_size for path in directory.glob("*.tia"))

    try:
        try:
            wait_for(journal_written, seconds=30)
        except AssertionError:
            pytest.fail(f"the daemon did not start recording:\n{log_path.read_text()}")
        time.sleep(2.0)  # the recording under test: two seconds of it, then the kill
        killed_at = datetime.datetime.now().astimezone()
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL

    raw = next(directory.glob("*.tia"))
    assert raw.name.endswith("_K9_run01.tia")
    assert not list(directory.glob("*.edf"))  # no graceful stop, so no conversion
    recording = open_raw(raw)
    packets = list(recording.packets())
    assert any("not stopped cleanly" in note for note in recording.notes)
    assert recording.started is not None

    # Gap-free and exact from the first tick on.
    ids = [p.packet_id for p in packets]
    assert ids == list(range(len(ids)))
    for packet in packets:
        np.testing.assert_array_equal(packet.signals[0x1], ramp_values(CHANNELS, packet.packet_id * BLOCK, BLOCK))
    # Up to the last flush: everything older than one flush interval (plus a generous margin for
    # a loaded machine: the kill itself, the first tick's start-up) is there.
    recorded = (killed_at - recording.started).total_seconds()
    assert recorded > 1.5
    packet_rate = RATE / BLOCK
    assert len(packets) >= (recorded - FLUSH - 0.5) * packet_rate, (len(packets), recorded)
    events = [p.packet_id for p in packets if 0x200000 in p.signals]
    assert events == list(range(50, len(packets), 50))

    output = tmp_path / "recovered.edf"
    assert cli.main(["convert", str(raw), "-o", str(output)]) == 0
    document = edfio.read_edf(output)
    assert document.labels == tuple(f"EEG eeg{c}" for c in range(1, CHANNELS + 1))
    assert document.signals[0].sampling_frequency == pytest.approx(RATE)
    count = len(packets) * BLOCK
    expected = np.array(ramp_values(CHANNELS, 0, count))
    for channel, edf_signal in enumerate(document.signals):
        np.testing.assert_allclose(edf_signal.data[:count], expected[channel], rtol=0, atol=0.02)
    onsets = [a.onset for a in document.annotations if a.text == "trigger=3"]
    assert onsets == [pid * BLOCK / RATE for pid in events]
