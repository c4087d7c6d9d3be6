"""EDF+/BDF+ channel labels carry the EDF+ signal type, so every reader types every channel.

A ramp server with one channel of each periodic TiA type is recorded with the writers of ``tia record`` (and
of the server's recording), then read by MNE (``infer_types=True``: names and types), by edfio (labels,
units, transducers) and by our own ``replay`` driver, which must serve the same signals, channels and
samples again.
"""

from __future__ import annotations

from pathlib import Path

import edfio
import numpy as np
import pytest
from support import config_from_text

from tia.protocol.packet import DataPacket, decode_packet, encode_header
from tia.recording.recorder import Recorder
from tia.recording.writers import write_recording
from tia.server.hub import StreamHub
from tia.sources import build_source

# label:type, what the file's label reads, MNE's type, the unit
CHANNELS = [
    ("Fp1", "EEG Fp1", "eeg", "uV"), ("FDI:emg", "EMG FDI", "emg", "uV"), ("HEOG:eog", "EOG HEOG", "eog", "uV"),
    ("II:ecg", "ECG II", "ecg", "uV"), ("pulse:hr", "MISC pulse", "misc", "bpm"),
    ("BP:bp", "MISC BP", "misc", "mmHg"), ("acc:sensor", "MISC acc", "misc", ""), ("u:user1", "MISC u", "misc", ""),
]
RAMP_INI = f"""
[source:all]
driver = ramp
rate = 200
blocksize = 4
type = eeg
channels = {", ".join(c[0] for c in CHANNELS)}
"""
PACKETS = 50


def packets_of(config_text: str, count: int) -> tuple[StreamHub, list[DataPacket]]:
    config = config_from_text(config_text)
    sources = [build_source(s) for s in config.sources]
    for source in sources:
        source.start()  # a replay loads its file
    hub = StreamHub(sources, config.subject)
    packets = []
    for number in range(count):
        tick = hub.produce(number)
        packets.append(decode_packet(encode_header(len(tick.body), tick.flags, tick.packet_id, number, 0) + tick.body))
    return hub, packets


@pytest.fixture(scope="module", params=[".bdf", ".edf"])
def recording(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[StreamHub, Path]:
    hub, packets = packets_of(RAMP_INI, PACKETS)
    recorder = Recorder(hub.metainfo)
    for packet in packets:
        recorder.feed(packet)
    path = tmp_path_factory.mktemp("typed") / f"all{request.param}"
    assert write_recording(recorder, path) == [path]
    return hub, path


def test_labels_units_and_transducers_follow_edf_plus(recording: tuple[StreamHub, Path]) -> None:
    _, path = recording
    document = edfio.read_bdf(path) if path.suffix == ".bdf" else edfio.read_edf(path)
    assert document.labels == tuple(c[1] for c in CHANNELS)  # listed in the file's order: by TiA type flag
    assert [s.physical_dimension for s in document.signals] == [c[3] for c in CHANNELS]
    assert [s.transducer_type for s in document.signals] == [
        "TiA " + (c[0].split(":")[1] if ":" in c[0] else "eeg") for c in CHANNELS
    ]


def test_mne_infers_every_type_and_the_tia_names(recording: tuple[StreamHub, Path]) -> None:
    mne = pytest.importorskip("mne")
    _, path = recording
    reader = mne.io.read_raw_bdf if path.suffix == ".bdf" else mne.io.read_raw_edf
    raw = reader(path, infer_types=True, preload=True, verbose="error")
    assert raw.ch_names == [c[0].split(":")[0] for c in CHANNELS]
    assert raw.get_channel_types() == [c[2] for c in CHANNELS]
    assert raw.info["sfreq"] == 200
    volts = raw.get_data()[0]  # uV on file, volts in MNE
    np.testing.assert_allclose(volts[:3] * 1e6, [1000, 1001, 1002], rtol=0, atol=(PACKETS * 4 + 2) / 2**16)


def test_our_replay_serves_the_file_as_it_was_recorded(recording: tuple[StreamHub, Path]) -> None:
    original, path = recording
    replay, packets = packets_of(f"[source:file]\ndriver = replay\nfile = {path}\nblocksize = 4\n", PACKETS)
    assert [(s.type, s.channel_names, s.sampling_rate) for s in replay.metainfo.signals] == [
        (s.type, s.channel_names, s.sampling_rate) for s in original.metainfo.signals
    ]
    _, sent = packets_of(RAMP_INI, PACKETS)
    bits = 24 if path.suffix == ".bdf" else 16
    step = (PACKETS * 4 + 2) / 2**bits  # each channel spans its first PACKETS * 4 ramp values
    for got, expected in zip(packets, sent, strict=True):
        for flag, block in expected.signals.items():
            np.testing.assert_allclose(got.signals[flag], block, rtol=0, atol=step)
