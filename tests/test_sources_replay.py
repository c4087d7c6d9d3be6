"""File replay: EDF/BDF written here come back exactly (within the format's resolution), in real time order."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from edfio import Bdf, BdfSignal, Edf, EdfAnnotation, EdfSignal

from tia.config import ConfigError, ServerConfig, load_config
from tia.protocol.packet import decode_packet, encode_header
from tia.protocol.signals import by_name
from tia.server.hub import StreamHub
from tia.sources import build_source
from tia.sources.base import SourceError, SourceFinished
from tia.sources.replay import ReplaySource

RATE, SECONDS, BLOCK = 200, 3, 10
PHYSICAL = (-500.0, 500.0)


def signals_data(count: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(PHYSICAL[0] * 0.9, PHYSICAL[1] * 0.9, (count, RATE * SECONDS))


def write_edf(path: Path, data: np.ndarray, bdf: bool = False, annotations: list[EdfAnnotation] | None = None) -> None:
    labels = ["EEG C3", "EEG C4", "ECG"]
    if bdf:
        bdf_signals = [BdfSignal(row, RATE, label=labels[i], physical_range=PHYSICAL) for i, row in enumerate(data)]
        Bdf(bdf_signals, annotations=annotations, data_record_duration=1).write(path)
    else:
        edf_signals = [EdfSignal(row, RATE, label=labels[i], physical_range=PHYSICAL) for i, row in enumerate(data)]
        Edf(edf_signals, annotations=annotations, data_record_duration=1).write(path)


def config(tmp_path: Path, body: str) -> ServerConfig:
    ini = tmp_path / "replay.ini"
    ini.write_text(body)
    return load_config(ini)


def hub_of(cfg: ServerConfig, on_fatal: list[str] | None = None) -> StreamHub:
    hub = StreamHub([build_source(s) for s in cfg.sources], cfg.subject,
                    on_fatal=None if on_fatal is None else on_fatal.append)
    hub.start_sources()
    return hub


def packet(hub: StreamHub, tick: int) -> dict[int, np.ndarray]:
    produced = hub.produce(tick)
    flags, body = produced.flags, produced.body
    return decode_packet(encode_header(len(body), flags, tick, 0, 0) + body).signals


def resolution(bdf: bool) -> float:
    digital = (1 << 24) - 1 if bdf else (1 << 16) - 1
    return (PHYSICAL[1] - PHYSICAL[0]) / digital


@pytest.mark.parametrize("bdf", [False, True], ids=["edf", "bdf"])
def test_edf_and_bdf_replay_exactly_within_resolution(tmp_path: Path, bdf: bool) -> None:
    data = signals_data(3)
    name = "rec.bdf" if bdf else "rec.edf"
    write_edf(tmp_path / name, data, bdf)
    cfg = config(tmp_path, f"[source:file]\ndriver = replay\nfile = {name}\nblocksize = {BLOCK}\n")
    spec = cfg.sources[0]
    assert spec.sampling_rate == RATE
    assert [(c.label, c.type.name) for c in spec.channels] == [("C3", "eeg"), ("C4", "eeg"), ("ECG", "ecg")]
    hub = hub_of(cfg)
    eeg, ecg = by_name("eeg").flag, by_name("ecg").flag
    tolerance = resolution(bdf) / 2 + 1e-4  # half a digital step, plus float32 rounding of ~500
    for tick in range(RATE * SECONDS // BLOCK):
        signals = packet(hub, tick)
        window = slice(tick * BLOCK, (tick + 1) * BLOCK)
        np.testing.assert_allclose(signals[eeg], data[:2, window], rtol=0, atol=tolerance)
        np.testing.assert_allclose(signals[ecg], data[2:, window], rtol=0, atol=tolerance)


def test_channels_select_and_retype_file_signals(tmp_path: Path) -> None:
    data = signals_data(3)
    write_edf(tmp_path / "rec.edf", data)
    cfg = config(tmp_path, "[source:file]\ndriver = replay\nfile = rec.edf\nblocksize = 10\n"
                           "channels = ECG:ecg, C3:emg\n")
    hub = hub_of(cfg)
    signals = packet(hub, 4)
    tolerance = resolution(False)
    np.testing.assert_allclose(signals[by_name("ecg").flag], data[2:, 40:50], atol=tolerance)
    np.testing.assert_allclose(signals[by_name("emg").flag], data[:1, 40:50], atol=tolerance)


def test_stop_server_at_end_stops_once_without_padding(tmp_path: Path) -> None:
    write_edf(tmp_path / "rec.edf", signals_data(3))
    # 600 samples, blocksize 7: the last complete block is tick 84 (samples 588..594)
    # two sources ending on the same tick ask to stop the server once
    cfg = config(tmp_path, "[source:file]\ndriver = replay\nfile = rec.edf\nblocksize = 7\n"
                           "[source:again]\ndriver = replay\nfile = rec.edf\nchannels = C3:emg\n"
                           "blocksize = 7\non_end = stop-server\n")
    reasons: list[str] = []
    hub = hub_of(cfg, reasons)
    assert by_name("eeg").flag in packet(hub, 84)
    assert packet(hub, 85) == {}
    assert len(reasons) == 1 and "finished" in reasons[0] and "rec.edf" in reasons[0]


def test_stop_signal_at_end_keeps_other_signals(tmp_path: Path) -> None:
    write_edf(tmp_path / "rec.edf", signals_data(3))
    cfg = config(tmp_path, "[source:tick]\ndriver = ramp\nrate = 20\nchannels = 1\ntype = hr\n"
                           "[source:file]\ndriver = replay\nfile = rec.edf\nblocksize = 10\non_end = stop-signal\n")
    reasons: list[str] = []
    hub = hub_of(cfg, reasons)
    assert set(packet(hub, 59)) == {by_name(t).flag for t in ("eeg", "ecg", "hr")}
    assert set(packet(hub, 60)) == {by_name("hr").flag}
    assert reasons == []


def test_loop_wraps_exactly_across_the_seam(tmp_path: Path) -> None:
    data = signals_data(3)
    write_edf(tmp_path / "rec.edf", data)
    cfg = config(tmp_path, "[source:file]\ndriver = replay\nfile = rec.edf\nchannels = C3:eeg\n"
                           "blocksize = 7\non_end = loop\n")
    hub = hub_of(cfg)
    tick = 85  # samples 595..601: the file's last five, then its first two
    expected = np.concatenate([data[0, 595:600], data[0, 0:2]])
    np.testing.assert_allclose(packet(hub, tick)[1][0], expected, atol=resolution(False))


def test_speed_multiplies_the_announced_rate(tmp_path: Path) -> None:
    write_edf(tmp_path / "rec.edf", signals_data(3))
    cfg = config(tmp_path, "[source:file]\ndriver = replay\nfile = rec.edf\nspeed = 2.5\nblocksize = 10\n")
    assert cfg.sources[0].sampling_rate == 500
    assert cfg.packet_rate == 50


def test_annotations_become_events_in_the_packet_of_their_onset(tmp_path: Path) -> None:
    annotations = [
        EdfAnnotation(0.5, None, "left"),
        EdfAnnotation(1.0, None, "5"),
        EdfAnnotation(1.02, None, "right"),  # same packet as the one before: goes out one later
        EdfAnnotation(2.25, None, "zzz"),
    ]
    write_edf(tmp_path / "rec.edf", signals_data(3), annotations=annotations)
    cfg = config(
        tmp_path,
        "[source:file]\ndriver = replay\nfile = rec.edf\nblocksize = 10\non_end = stop-signal\n"
        "[source:notes]\ndriver = replay\nfile = rec.edf\nchannels = marker:event\ncodes = left=10, right=11\n"
        "on_end = stop-signal\n",
    )
    hub = hub_of(cfg)
    event = by_name("event").flag
    seen = {}
    for tick in range(RATE * SECONDS // BLOCK + 2):
        signals = packet(hub, tick)
        if event in signals:
            seen[tick] = float(signals[event][0, 0])
    # 20 packets/s: 0.5 s -> tick 10, 1.0 s -> 20, 1.02 s -> 20 (spread to 21), 2.25 s -> 45
    # "zzz" is neither mapped nor a number: numbered 1 (the first code not used)
    assert seen == {10: 10.0, 20: 5.0, 21: 11.0, 45: 1.0}


def test_csv_with_typed_header(tmp_path: Path) -> None:
    table = np.arange(60, dtype=np.float64).reshape(20, 3) / 4
    np.savetxt(tmp_path / "d.csv", table, delimiter=",", header="a:eeg,b:eeg,c:bp", comments="", fmt="%.2f")
    cfg = config(tmp_path, "[source:csv]\ndriver = replay\nfile = d.csv\nrate = 20\nblocksize = 5\n")
    assert [(c.label, c.type.name) for c in cfg.sources[0].channels] == [("a", "eeg"), ("b", "eeg"), ("c", "bp")]
    hub = hub_of(cfg)
    signals = packet(hub, 1)
    np.testing.assert_array_equal(signals[1], table[5:10, :2].T)
    np.testing.assert_array_equal(signals[by_name("bp").flag], table[5:10, 2:].T)


def test_npy_and_npz(tmp_path: Path) -> None:
    data = np.arange(40, dtype=np.float32).reshape(2, 20)
    np.save(tmp_path / "d.npy", data)
    np.savez(tmp_path / "d.npz", data=data, rate=np.array(40.0), labels=np.array(["x", "y"]),
             types=np.array(["emg", "emg"]))
    npy = config(tmp_path, "[source:npy]\ndriver = replay\nfile = d.npy\nrate = 10\nblocksize = 2\ntype = eeg\n")
    np.testing.assert_array_equal(packet(hub_of(npy), 3)[1], data[:, 6:8])
    npz = config(tmp_path, "[source:npz]\ndriver = replay\nfile = d.npz\nblocksize = 4\nchannels = y:emg\n")
    assert npz.sources[0].sampling_rate == 40
    np.testing.assert_array_equal(packet(hub_of(npz), 2)[2], data[1:, 8:12])


def error_of(tmp_path: Path, body: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config(tmp_path, body)
    return info.value


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ("file = missing.edf\n", "file", "no such file"),
        ("file = rec.edf\nchannels = Cz:eeg\n", "channels", "no signal 'Cz'"),
        ("file = rec.edf\nrate = 256\n", "rate", "nothing is resampled"),
        ("file = rec.edf\nspeed = -1\n", "speed", "positive"),
        ("file = rec.edf\non_end = rewind\n", "on_end", "loop"),
        ("file = rec.edf\nchannels = marker:event\n", "file", "no EDF+/BDF+ annotations"),
        ("file = rec.edf\ncodes = a=1\n", "codes", "only used on an event"),
        ("file = plain.csv\nrate = 10\n", "type", "does not say the type"),
        ("file = plain.csv\nspeed = 2\n", "speed", "no rate of its own"),
    ],
)
def test_errors_name_section_and_key(tmp_path: Path, extra: str, key: str, words: str) -> None:
    write_edf(tmp_path / "rec.edf", signals_data(3))
    (tmp_path / "plain.csv").write_text("1,2\n3,4\n")
    error = error_of(tmp_path, "[source:file]\ndriver = replay\nblocksize = 1\n" + extra)
    assert (error.section, error.key) == ("source:file", key)
    assert words in error.message
    assert str(tmp_path / "replay.ini") in str(error)


def test_signals_of_different_rates_need_separate_sections(tmp_path: Path) -> None:
    signals = [EdfSignal(np.zeros(200), 200, label="EEG C3"), EdfSignal(np.zeros(100), 100, label="EEG C4")]
    Edf(signals, data_record_duration=1).write(tmp_path / "rec.edf")
    error = error_of(tmp_path, "[source:file]\ndriver = replay\nfile = rec.edf\n")
    assert error.key == "channels" and "different rates" in error.message
    cfg = config(tmp_path, "[source:a]\ndriver = replay\nfile = rec.edf\nchannels = C3:eeg\nblocksize = 2\n"
                           "[source:b]\ndriver = replay\nfile = rec.edf\nchannels = C4:emg\n")
    assert [s.sampling_rate for s in cfg.sources] == [200, 100]


def test_file_gone_at_start_is_a_source_error_naming_the_section(tmp_path: Path) -> None:
    write_edf(tmp_path / "rec.edf", signals_data(3))
    cfg = config(tmp_path, "[source:lab]\ndriver = replay\nfile = rec.edf\nblocksize = 10\n")
    (tmp_path / "rec.edf").unlink()
    source = build_source(cfg.sources[0])
    with pytest.raises(SourceError, match=r"source \[lab\].*rec\.edf"):
        source.start()


def test_read_after_the_end_keeps_saying_finished(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.zeros((1, 4), dtype=np.float32))
    cfg = config(tmp_path, "[source:x]\ndriver = replay\nfile = d.npy\nrate = 2\nblocksize = 2\ntype = eeg\n")
    source = build_source(cfg.sources[0])
    assert isinstance(source, ReplaySource)
    source.start()
    assert source.read(1) is not None
    with pytest.raises(SourceFinished) as info:
        source.read(2)
    assert info.value.stop_server  # the default on_end
    assert cfg.sources[0].sampling_rate == Fraction(2)


def test_shipped_example_files_replay(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent / "etc" / "examples"
    for name in ("replay-edf.ini", "replay-csv.ini"):
        cfg = load_config(root / name)
        hub = hub_of(cfg)
        assert packet(hub, 0)
