"""The client side of recording (``tia record``, ``tia convert``) loads no server module.

Layers: ``tia.recording.recorder``, ``writers`` and ``journal`` sit on the
protocol only; the server's recording (``sink``, ``service``) sits on them.
A child interpreter converts a journal written by the server's format and
reports every module it loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from support import ramp_config

from tia.protocol.packet import encode_header
from tia.recording.journal import sidecar, write_json
from tia.server.hub import StreamHub
from tia.sources import build_source

CONVERT = """
import json, sys
from tia.recording.journal import convert_raw
from tia.recording.writers import write_recording

result = convert_raw(sys.argv[1], [sys.argv[2]])
print(json.dumps({"files": [str(p) for p in result.files], "modules": sorted(sys.modules)}))
"""
FORBIDDEN = ("tia.server", "tia.config", "tia.sources", "tia.client", "tia.lsl", "twisted", "edfio")


def write_journal(stem: Path, packets: int) -> None:
    """``packets`` ticks of a ramp server as the server's recording writes them."""
    config = ramp_config(rate=1000, blocksize=10, channels=2)
    hub = StreamHub([build_source(s) for s in config.sources], config.subject)
    with open(stem.with_suffix(".tia"), "xb") as journal:
        for number in range(packets):
            tick = hub.produce(number)
            journal.write(encode_header(len(tick.body), tick.flags, tick.packet_id, number, tick.timestamp))
            journal.write(tick.body)
    write_json(stem.with_suffix(".json"), sidecar(
        hub.metainfo, stem.with_suffix(".tia"), started=None, first_timestamp=0, flush_interval=1.0,
        formats=("raw",), server={}, finished={"packets": packets},
    ))


def test_writers_and_journal_load_no_server_no_twisted_no_edfio(tmp_path: Path) -> None:
    write_journal(tmp_path / "run01", 20)
    output = tmp_path / "run01.npz"
    child = subprocess.run([sys.executable, "-c", CONVERT, str(tmp_path / "run01.tia"), str(output)],
                           capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(child.stdout)
    assert report["files"] == [str(output)]
    loaded = [name for name in report["modules"] if name.startswith(FORBIDDEN)]
    assert loaded == [], loaded
    archive = np.load(output)
    assert archive["eeg"].shape == (2, 200)
    np.testing.assert_array_equal(archive["packet_ids"], np.arange(20))
