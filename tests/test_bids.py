"""BIDS-EEG datasets (tia.recording.bids): ``tia record --bids``, ``tia convert --bids`` and ``[recording]
formats = bids``.

Every dataset written here is checked by the official BIDS validator (bids-validator-deno, which .ci/run
installs; the check skips, naming it, where it is missing) and read back with ``mne_bids.read_raw_bids``:
channel names, types, units, rates, events and the ramp's exact values within the data format's resolution.
The server's signals cover the types: eeg, eog, ecg and emg (one ramp source), bp at a tenth of the rate,
and event codes 5 and 6 every 0.1 s.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from signal import SIGHUP, SIGINT, SIGTERM, Signals
from typing import Any

import numpy as np
import pytest
from support import LogCapture, config_from_text, start_daemon, ticks
from test_cli import read_line
from test_recording_server import scratch
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tia.cli import main
from tia.config import ConfigError, ServerConfig
from tia.daemon import build_service
from tia.protocol.metainfo import MetaInfo, SignalInfo
from tia.protocol.packet import DataPacket, encode_header
from tia.protocol.signals import by_name
from tia.recording.bids import BIDSRun, next_run, write_bids_run
from tia.recording.journal import convert_raw, sidecar, write_json
from tia.recording.recorder import Recorder, RecordingError
from tia.recording.service import missing_writer
from tia.server.hub import StreamHub
from tia.sources import build_source

mne_bids = pytest.importorskip("mne_bids", reason="mne-bids writes BIDS (the bids extra, part of the test extra)")

SERVER_INI = """\
[server]
control = tcp:0:interface=127.0.0.1

[subject]
id = S01
first_name = Ada
surname = Lovelace

[source:eeg]
driver = ramp
rate = 1000
blocksize = 10
type = eeg
channels = Fp1, Fp2, Cz, HEOG:eog, VEOG:eog, ECG:ecg, EMG:emg

[source:bp]
driver = ramp
rate = 100
blocksize = 1
channels = BP:bp

[source:markers]
driver = events
channels = trigger:event
interval = 0.1
codes = 5, 6
"""
# In the data file's order (eeg, emg, eog, ecg, bp: the TiA flag order): name, MNE type, BIDS type, unit,
# rate, and the ramp channel (its row in its source, from 1).
CHANNELS = [
    ("Fp1", "eeg", "EEG", "µV", 1000, 1), ("Fp2", "eeg", "EEG", "µV", 1000, 2), ("Cz", "eeg", "EEG", "µV", 1000, 3),
    ("EMG", "emg", "EMG", "µV", 1000, 7), ("HEOG", "eog", "EOG", "µV", 1000, 4), ("VEOG", "eog", "EOG", "µV", 1000, 5),
    ("ECG", "ecg", "ECG", "µV", 1000, 6), ("BP", "misc", "MISC", "mmHg", 100, 1),
]
SUBJECT, TASK = "S01", "oddball"
BLOCK, RATE = 10, 1000


# ---------------------------------------------------------------- helpers


NO_VALIDATOR = "the BIDS validator is not installed: pip install bids-validator-deno (.ci/run does)"


def validator() -> str | None:
    """The official BIDS validator's command (bids-validator-deno, from PyPI), if installed."""
    return shutil.which("bids-validator-deno") or shutil.which(
        "bids-validator-deno", path=str(Path(sys.executable).parent))


def validate(root: Path) -> dict[str, Any]:
    """The official BIDS validator on ``root``: no error (warnings are recommendations); its summary."""
    command = validator()
    if command is None:
        pytest.skip(NO_VALIDATOR)
    result = subprocess.run([command, str(root), "--format", "json"], capture_output=True, text=True, timeout=120,
                            check=False)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"the BIDS validator did not report (exit {result.returncode}):\n{result.stdout}{result.stderr}")
    errors = [issue for issue in report["issues"]["issues"] if issue["severity"] == "error"]
    assert errors == [], errors
    summary: dict[str, Any] = report["summary"]
    return summary


def read_back(root: Path, run: int, session: str | None = None) -> Any:
    """``mne_bids.read_raw_bids`` as a researcher calls it, loaded."""
    path = mne_bids.BIDSPath(root=root, subject=SUBJECT, session=session, task=TASK, run=run, datatype="eeg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "no electrode positions"
        raw = mne_bids.read_raw_bids(path, verbose="error")
    raw.load_data(verbose="error")
    return raw


def tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:  # mne-bids before 0.16 writes a BOM
        return list(csv.DictReader(handle, delimiter="\t"))


def run_files(root: Path, run: int, session: str | None = None) -> dict[str, Path]:
    """The files of one run by their suffix (``eeg.bdf``, ``channels.tsv``, ...)."""
    folder = root / f"sub-{SUBJECT}" / (f"ses-{session}" if session else "") / "eeg"
    ses = f"_ses-{session}" if session else ""
    stem = f"sub-{SUBJECT}{ses}_task-{TASK}_run-{run}_"
    return {path.name.removeprefix(stem): path for path in folder.iterdir() if path.name.startswith(stem)}


def check_run(root: Path, run: int, first_sample: int | None = None, data_format: str = "bdf",
              session: str | None = None) -> Any:
    """One run, file by file and as MNE reads it: the layout, channels, units, rates, events and samples.

    ``first_sample``: the ramp's global sample index at the run's start (None: read from the data).
    Returns the raw data as read back.
    """
    files = run_files(root, run, session)
    assert sorted(files) == sorted([f"eeg.{data_format}", "eeg.json", "channels.tsv", "events.tsv",
                                    "events.json"])
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no scratch left behind
    channels = tsv(files["channels.tsv"])
    assert [(c["name"], c["type"], c["units"], float(c["sampling_frequency"])) for c in channels] == [
        (name, bids_type, unit, rate) for name, _, bids_type, unit, rate, _ in CHANNELS
    ]
    sidecar_json = json.loads(files["eeg.json"].read_text(encoding="utf-8"))
    assert sidecar_json["TaskName"] == TASK and sidecar_json["SamplingFrequency"] == RATE
    assert sidecar_json["SoftwareVersions"].startswith("txtia ")
    assert (sidecar_json["EEGChannelCount"], sidecar_json["EOGChannelCount"], sidecar_json["ECGChannelCount"],
            sidecar_json["EMGChannelCount"], sidecar_json["MISCChannelCount"]) == (3, 2, 1, 1, 1)
    assert b"Lovelace" not in files[f"eeg.{data_format}"].read_bytes()[:256]  # the header names no one

    raw = read_back(root, run, session)
    assert raw.ch_names == [c[0] for c in CHANNELS]
    assert raw.get_channel_types() == [c[1] for c in CHANNELS]
    assert raw.info["sfreq"] == RATE
    assert [ch["unit"] for ch in raw.info["chs"][:7]] == [107] * 7  # FIFF_UNIT_V: the file's uV, as volts
    data = raw.get_data()
    bits = 24 if data_format == "bdf" else 16
    ramp_rows = data[:7] * 1e6
    start = round(ramp_rows[0, 0]) - 1000 if first_sample is None else first_sample
    samples = np.arange(start, start + data.shape[1])
    for row, (name, *_, channel) in zip(ramp_rows, CHANNELS[:7], strict=True):
        expected = channel * 1000 + samples % 1000
        step = (expected.max() - expected.min() + 2) / 2**bits  # the physical range spans the data
        np.testing.assert_allclose(row, expected, rtol=0, atol=step, err_msg=name)

    events = tsv(files["events.tsv"])
    assert list(events[0]) == ["onset", "duration", "trial_type", "value", "sample", "signal"]
    codes = [e for e in events if e["trial_type"] == "trigger"]
    assert codes and {e["value"] for e in codes} <= {"5", "6"}
    for event in codes:  # on the packet grid: a whole number of packets, written exactly
        sample = int(event["sample"])
        assert sample % BLOCK == 0 and event["onset"] == f"{sample / RATE:.3f}" and event["signal"] == "event"
        assert event["duration"] == "0.000"
    annotations = [(a["onset"], a["description"]) for a in raw.annotations if a["description"] != "BAD_ACQ_SKIP"]
    assert annotations == [(pytest.approx(int(e["sample"]) / RATE), f"trigger/{e['value']}") for e in codes]
    return raw


def server_config(**recording: str) -> ServerConfig:
    lines = "".join(f"{key} = {value}\n" for key, value in recording.items())
    return config_from_text(SERVER_INI + ("[recording]\n" + lines if recording else ""), path="lab.ini")


def write_journal(stem: Path, packets: int, drop: range = range(0), finished: bool = True) -> None:
    """``packets`` ticks of the test server as its recording writes them, without those in ``drop``."""
    config = server_config()
    hub = StreamHub([build_source(s) for s in config.sources], config.subject)
    with open(stem.with_suffix(".tia"), "xb") as journal:
        written = 0
        for number in range(packets):
            tick = hub.produce(number)
            if number in drop:
                continue
            journal.write(encode_header(len(tick.body), tick.flags, tick.packet_id, written, tick.timestamp))
            journal.write(tick.body)
            written += 1
    write_json(stem.with_suffix(".json"), sidecar(
        hub.metainfo, stem.with_suffix(".tia"), started=None, first_timestamp=0, flush_interval=1.0,
        formats=("raw",), server={}, finished={"packets": written} if finished else None,
    ))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------- from a journal (tia convert, the server's child)


def test_a_journal_becomes_a_valid_bids_run_read_back_exactly(tmp_path: Path) -> None:
    write_journal(tmp_path / "run", 60)
    root = tmp_path / "study"
    target = BIDSRun(root, SUBJECT, TASK, line_freq=50)
    result = convert_raw(tmp_path / "run.tia", [], bids=target)
    summary = validate(root)
    assert (summary["subjects"], summary["tasks"], summary["modalities"]) == ([SUBJECT], [TASK], ["EEG"])
    files = run_files(root, 1)
    assert result.files == [files["eeg.bdf"], files["eeg.json"], files["channels.tsv"], files["events.tsv"],
                            files["events.json"]]
    raw = check_run(root, 1, first_sample=0)
    assert raw.info["line_freq"] == 50
    assert [e["sample"] for e in tsv(files["events.tsv"])] == ["100", "200", "300", "400", "500"]
    assert json.loads((root / "dataset_description.json").read_text())["GeneratedBy"][0]["Name"] == "txtia"
    assert tsv(root / "participants.tsv")[0]["participant_id"] == f"sub-{SUBJECT}"
    assert [s["filename"] for s in tsv(root / f"sub-{SUBJECT}" / f"sub-{SUBJECT}_scans.tsv")] == [
        f"eeg/sub-{SUBJECT}_task-{TASK}_run-1_eeg.bdf"]


def test_the_next_recording_is_the_next_run_and_nothing_is_ever_overwritten(tmp_path: Path) -> None:
    write_journal(tmp_path / "run", 30)
    root = tmp_path / "study"
    target = BIDSRun(root, SUBJECT, TASK, session="2")
    assert next_run(target) == 1
    convert_raw(tmp_path / "run.tia", [], bids=target)
    before = {name: path.read_bytes() for name, path in run_files(root, 1, "2").items()}
    convert_raw(tmp_path / "run.tia", [], bids=target)
    assert next_run(target) == 3
    assert {name: path.read_bytes() for name, path in run_files(root, 1, "2").items()} == before
    with pytest.raises(RecordingError, match=r"run 2 of .* exists \(.*\); nothing is overwritten"):
        convert_raw(tmp_path / "run.tia", [], bids=BIDSRun(root, SUBJECT, TASK, session="2", run=2))
    assert next_run(BIDSRun(root, SUBJECT, "rest", session="2")) == 1  # runs count per task
    validate(root)
    check_run(root, 2, first_sample=0, session="2")
    scans = root / f"sub-{SUBJECT}" / "ses-2" / f"sub-{SUBJECT}_ses-2_scans.tsv"
    assert len(tsv(scans)) == 2


def test_edf_data_and_gaps_annotated_in_events_tsv(tmp_path: Path) -> None:
    """Packets missing from the journal (a full queue) are BAD_ACQ_SKIP rows; EDF keeps 16 bits."""
    write_journal(tmp_path / "run", 50, drop=range(20, 23))
    root = tmp_path / "study"
    result = convert_raw(tmp_path / "run.tia", [], bids=BIDSRun(root, SUBJECT, TASK, data_format="edf"))
    assert any("3 packets are missing" in note for note in result.notes)
    validate(root)
    events = tsv(run_files(root, 1)["events.tsv"])
    gaps = [e for e in events if e["trial_type"] == "BAD_ACQ_SKIP"]
    assert [(g["onset"], g["duration"], g["value"], g["signal"]) for g in gaps] == [("0.200", "0.030", "n/a", "n/a")]
    assert [e["onset"] for e in events] == sorted(e["onset"] for e in events)
    raw = read_back(root, 1)
    assert next(a["onset"] for a in raw.annotations if a["description"] == "BAD_ACQ_SKIP") == pytest.approx(0.2)
    data = raw.get_data(picks=["Fp1"])[0] * 1e6
    expected = 1000 + np.arange(500) % 1000
    kept = np.r_[0:200, 230:500]
    np.testing.assert_allclose(data[kept], expected[kept], rtol=0, atol=(1000 + 500) / 2**16)


def test_events_of_several_channels_keep_their_label_code_and_signal(tmp_path: Path) -> None:
    """Two buttons sharing codes: trial_type is the channel, value the code, as TiA sent it (float32, exactly)."""
    meta = MetaInfo(100.0, 1, (
        SignalInfo(by_name("eeg"), 100.0, 1, ("Cz",)),
        SignalInfo(by_name("button"), 100.0, 1, ("left", "right")),
    ))
    recorder = Recorder(meta)
    for packet_id, (left, right) in enumerate([(0, 0), (1, 0), (1, 1), (0, 1234567)]):
        recorder.feed(DataPacket(packet_id, packet_id, 0, 0x41, {
            0x1: np.array([[packet_id]], np.float32), 0x40: np.array([[left], [right]], np.float32)}))
    root = tmp_path / "study"
    write_bids_run(recorder, BIDSRun(root, SUBJECT, TASK))
    events = tsv(run_files(root, 1)["events.tsv"])
    assert [(e["onset"], e["trial_type"], e["value"], e["signal"]) for e in events] == [
        ("0.00", "left", "0", "button"), ("0.00", "right", "0", "button"), ("0.01", "left", "1", "button"),
        ("0.02", "right", "1", "button"), ("0.03", "left", "0", "button"), ("0.03", "right", "1234567", "button"),
    ]
    validate(root)
    raw = read_back(root, 1)
    assert list(raw.annotations.description) == ["left/0", "right/0", "left/1", "right/1", "left/0", "right/1234567"]


def test_labels_that_bids_cannot_name_are_one_line_each(tmp_path: Path) -> None:
    for entity, value in (("subject", "S-01"), ("task", "odd ball"), ("session", "")):
        keys = {"subject": SUBJECT, "task": TASK, entity: value}
        with pytest.raises(RecordingError) as raised:
            BIDSRun(tmp_path, **keys)  # type: ignore[arg-type]
        assert f"a BIDS {entity} label: letters and digits only" in str(raised.value)


# ---------------------------------------------------------------- tia record --bids, tia convert --bids


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("bids-server")
    (workdir / "lab.ini").write_text(SERVER_INI, encoding="utf-8")
    yield from start_daemon(["--config", "lab.ini"], workdir)


def test_tia_record_bids_writes_run_after_run(capsys: pytest.CaptureFixture[str], server: str, tmp_path: Path) -> None:
    root = tmp_path / "study"
    record = ["record", server, "--bids", str(root), "--subject", SUBJECT, "--task", TASK, "--seconds", "0.5"]
    code, out, err = run(capsys, *record)
    assert code == 0, err
    assert "recorded 0.500 s" in out and "50 packets, 0 missing" in out
    files = run_files(root, 1)
    assert f"wrote {files['eeg.bdf']}\n" in out and f"wrote {files['events.tsv']}\n" in out
    code, out, err = run(capsys, *record, "--format", "edf", "--line-freq", "60")
    assert code == 0, err
    summary = validate(root)
    assert summary["subjects"] == [SUBJECT]
    check_run(root, 1)
    raw = check_run(root, 2, data_format="edf")
    assert raw.info["line_freq"] == 60


@pytest.mark.parametrize("stop", [SIGTERM, SIGHUP, SIGINT], ids=lambda s: s.name)
def test_tia_record_bids_stopped_by_a_signal_writes_a_complete_run(server: str, tmp_path: Path, stop: Signals) -> None:
    root = tmp_path / "study"
    process = subprocess.Popen(
        [sys.executable, "-m", "tia.cli", "record", server, "--bids", str(root), "--subject", SUBJECT,
         "--task", TASK], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stderr is not None
        started = read_line(process.stderr, 30)  # written once the first packet is in
        assert started.startswith(f"tia: recording {server} to {root} (sub-{SUBJECT} task-{TASK})"), started
        process.send_signal(stop)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert err == ""
    assert f"wrote {run_files(root, 1)['eeg.bdf']}" in out
    if stop == SIGTERM:
        validate(root)
    raw = read_back(root, 1)
    assert raw.ch_names == [c[0] for c in CHANNELS]


def test_tia_convert_bids_after_a_crash(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    write_journal(tmp_path / "run03", 40, finished=False)
    root = tmp_path / "study"
    code, out, err = run(capsys, "convert", str(tmp_path / "run03.tia"), "--bids", str(root), "--subject", SUBJECT,
                         "--task", TASK)
    assert code == 0, err
    assert "run03.tia was not stopped cleanly" in err
    assert "converted 0.400 s: 40 packets, 0 missing" in out
    assert f"wrote {run_files(root, 1)['channels.tsv']}" in out
    validate(root)
    check_run(root, 1, first_sample=0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bids", "R", "--task", TASK], "--bids needs --subject"),
        (["--bids", "R", "--subject", SUBJECT], "--bids needs --task"),
        (["--bids", "R", "--subject", "S_01", "--task", TASK], "--subject: 'S_01' is not a BIDS subject label"),
        (["--bids", "R", "--subject", SUBJECT, "--task", TASK, "--session", "a-b"], "--session: 'a-b' is not"),
        (["--bids", "R", "--subject", SUBJECT, "--task", TASK, "-f"], "--force does not go with --bids"),
        (["-o", "x.bdf", "--subject", SUBJECT], "--subject goes with --bids ROOT"),
        (["-o", "x.bdf", "--format", "edf"], "--format goes with --bids ROOT"),
    ],
)
def test_bids_usage_errors_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    for command in (["record", "127.0.0.1:1"], ["convert", "nothing.tia"]):
        code, out, err = run(capsys, *command, *argv)
        assert code == 2, err
        assert err.startswith(f"tia {command[0]}: error: {message}"), err
        assert err.count("\n") == 1 and out == ""
    assert not (tmp_path / "R").exists()


def test_a_given_run_that_exists_is_refused_before_recording(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write_journal(tmp_path / "run", 20)
    root = tmp_path / "study"
    convert_raw(tmp_path / "run.tia", [], bids=BIDSRun(root, SUBJECT, TASK))
    code, _, err = run(capsys, "record", "127.0.0.1:1", "--bids", str(root), "--subject", SUBJECT, "--task", TASK,
                       "--run", "1")
    assert code == 2
    assert err.startswith(f"tia record: error: --run: run 1 of {root} (sub-{SUBJECT} task-{TASK}) exists")


def test_without_mne_bids_one_line_names_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "mne_bids", None)
    code, out, err = run(capsys, "record", "127.0.0.1:1", "--bids", str(tmp_path), "--subject", SUBJECT,
                         "--task", TASK)
    assert (code, out, err) == (2, "", "tia record: error: writing BIDS needs mne-bids: pip install 'txtia[bids]'\n")
    with pytest.raises(ConfigError) as raised:
        server_config(enabled="on", formats="bids", bids_root="study", task=TASK)
    assert str(raised.value) == "lab.ini [recording] formats: recording BIDS needs mne-bids: pip install 'txtia[bids]'"
    server_config(enabled="off", formats="bids", bids_root="study", task=TASK)  # checked when it is used
    assert missing_writer(("bids", "raw")) == "recording BIDS needs mne-bids: pip install 'txtia[bids]'"


# ---------------------------------------------------------------- [recording] formats = bids


def test_recording_config_bids_keys() -> None:
    config = server_config(formats="bids, raw", bids_root="/data/study", task=TASK, session="2", bids_format="edf",
                           line_freq="50").recording
    assert (config.formats, config.bids_root, config.task, config.session, config.bids_format, config.line_freq) == (
        ("bids", "raw"), "/data/study", TASK, "2", "edf", 50.0)
    assert server_config(formats="bids", bids_root="s", task=TASK).recording.bids_format == "bdf"
    cases = {
        (("formats", "bids"), ("task", TASK)): "lab.ini [recording] bids_root: missing; formats lists bids",
        (("formats", "bids"), ("bids_root", "s")): "lab.ini [recording] task: missing; formats lists bids",
        (("formats", "bids"), ("bids_root", "s"), ("task", "odd-ball")):
            "lab.ini [recording] task: 'odd-ball' is not a BIDS label",
        (("formats", "bids"), ("bids_root", "s"), ("task", TASK), ("session", "a b")):
            "lab.ini [recording] session: 'a b' is not a BIDS label",
        (("formats", "bids"), ("bids_root", "s"), ("task", TASK), ("bids_format", "gdf")):
            "lab.ini [recording] bids_format: 'gdf' is not one of bdf, edf",
        (("formats", "bdf"), ("bids_root", "s")): "lab.ini [recording] bids_root: set, but formats does not list bids",
        (("task", TASK),): "lab.ini [recording] task: set, but formats does not list bids",
    }
    for keys, message in cases.items():
        with pytest.raises(ConfigError) as raised:
            server_config(**dict(keys))
        assert str(raised.value).startswith(message), (keys, str(raised.value))
    with pytest.raises(ConfigError) as raised:
        config_from_text(SERVER_INI.replace("id = S01", "id = S_01")
                         + "[recording]\nformats = bids\nbids_root = s\ntask = rest\n", path="lab.ini")
    assert str(raised.value).startswith("lab.ini [subject] id: 'S_01' is not a BIDS subject label")


class ServerRecordingTests(unittest.TestCase):
    """The server's own recording (a real reactor and real files): each run joins the dataset at its stop."""

    timeout = 120

    @inlineCallbacks
    def test_each_run_of_the_server_joins_the_dataset(self) -> Any:
        if validator() is None:
            raise unittest.SkipTest(NO_VALIDATOR)
        directory = scratch(self)
        root = directory / "study"
        service = build_service(server_config(
            enabled="on", formats="bids", directory=str(directory / "recordings"), bids_root=str(root), task=TASK,
            line_freq="50"))
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        yield ticks(service, 60)
        manager = service.getServiceNamed("recording").manager
        yield manager.stop()
        self.assertEqual((manager.last.state, manager.last.error), ("off", None))
        manager.start()
        yield ticks(service, 30)
        yield service.stopService()
        summary = validate(root)
        self.assertEqual(summary["subjects"], [SUBJECT])
        self.assertEqual(check_run(root, 1, first_sample=0).info["line_freq"], 50)
        check_run(root, 2)
        self.assertEqual(manager.last.files[0], run_files(root, 2)["eeg.bdf"])
        self.assertEqual(list((directory / "recordings").iterdir()), [])  # no raw: the journals are gone

    @inlineCallbacks
    def test_a_run_that_cannot_join_the_dataset_keeps_its_journal_and_says_how_to_convert_it(self) -> Any:
        directory = scratch(self)
        (directory / "a-file").write_bytes(b"")
        log = LogCapture(self)
        service = build_service(server_config(
            enabled="on", formats="bids", directory=str(directory / "recordings"),
            bids_root=str(directory / "a-file" / "study"), task=TASK, session="2"))
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        yield ticks(service, 20)
        yield service.stopService()
        (raw,) = (directory / "recordings").glob("*.tia")
        (line,) = log.find("error", "cannot write a BIDS run")
        self.assertIn("Not a directory", line)
        self.assertIn(f"the raw recording {raw} is kept (convert it later with: tia convert {raw} --bids "
                      f"{directory / 'a-file' / 'study'} --subject {SUBJECT} --task {TASK} --session 2)", line)
