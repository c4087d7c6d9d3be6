"""The ``tia`` command against a real daemon, and the recorder on crafted packets.

The daemon runs as a subprocess (``python -m twisted tia``) on a free port:
two ramp signals at different rates, or a ramp plus an event source from an
INI file. ``tia.cli.main`` runs in-process, so stdout and stderr are captured
by pytest, except where a test stops ``tia record`` with a signal: that runs
as a process of its own. The recorder tests feed packets directly to cover
gaps and layouts no healthy server produces.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import select
import subprocess
import sys
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from signal import SIGHUP, SIGINT, SIGTERM, Signals, getsignal
from typing import IO

import edfio
import numpy as np
import pytest
from support import free_port, ramp_values, start_daemon

from tia.cli import main, monitor, record
from tia.cli.common import Address, parse_address
from tia.cli.monitor import sparkline
from tia.protocol.metainfo import MetaInfo, SignalInfo
from tia.protocol.packet import DataPacket
from tia.protocol.signals import by_name
from tia.recording.recorder import Recorder, RecordingError
from tia.recording.writers import _record_layout, write_recording

EEG, BP, EVENT = 0x1, 0x20, 0x200000
RAMP_SIGNALS = ["--signal", "eeg:4:1000:10:ramp", "--signal", "bp:1:100:1:ramp"]
EVENTS_INI = """\
[server]
control = tcp:0:interface=127.0.0.1

[subject]
id = T02
first_name = Ada
surname = Lovelace

[source:eeg]
driver = ramp
rate = 1000
blocksize = 10
type = eeg
channels = Fp1, Fp2, Cz

[source:markers]
driver = events
channels = trigger:event
interval = 0.2
codes = 5, 6
"""


@pytest.fixture(scope="module")
def ramp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from start_daemon(RAMP_SIGNALS, tmp_path_factory.mktemp("ramp"))


@pytest.fixture(scope="module")
def event_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("events")
    config = workdir / "events.ini"
    config.write_text(EVENTS_INI, encoding="utf-8")
    yield from start_daemon(["--config", str(config)], workdir)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- command line ------------------------------------------------------------


COMMANDS = ["info", "monitor", "record", "ping", "event", "recording", "convert", "lsl"]


@pytest.mark.parametrize(
    "command", [[], ["info"], ["monitor"], ["record"], ["ping"], ["event"], ["recording"], ["lsl"]]
)
def test_every_command_has_help(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0
    assert out.startswith("usage: tia")
    assert "HOST[:PORT]" in out or not command


def test_convert_has_help_and_every_command_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "convert", "--help")
    assert code == 0
    assert out.startswith("usage: tia convert") and "RAW" in out
    _, out, _ = run(capsys, "--help")
    lines = out.split("COMMAND\n", 1)[1].splitlines()
    listed = [line.split()[0] for line in lines if line.startswith("    ") and not line.startswith("     ")]
    assert listed == COMMANDS


def test_readme_documents_every_command() -> None:
    readme = (Path(__file__).parent.parent / "README.rst").read_text(encoding="utf-8")
    section = readme.split("The ``tia`` command\n-------------------\n", 1)[1].split("\nSecurity model\n", 1)[0]
    documented = [line.split()[1].rstrip("`") for line in section.splitlines() if line.startswith("``tia ")]
    assert documented == ["SUBCOMMAND", *COMMANDS]


def test_the_command_never_loads_the_server(tmp_path: Path) -> None:
    """No command loads the server's modules, ``tia convert`` (the journal reader) and ``tia lsl``
    (the bridge) included; ``tia lsl`` alone loads ``tia.sources``, for its pylsl loader."""
    code = (
        "import sys\n"
        "from tia.cli import main\n"
        "import tia.cli.parser\n"
        "def loaded(*packages):\n"
        "    return [m for m in sys.modules if m.startswith(packages)]\n"
        "assert main(['info', '127.0.0.1:1', '--timeout', '1']) == 1\n"
        "assert main(['event', '--host', '127.0.0.1:1', '--timeout', '1', '7']) == 1\n"
        "assert main(['recording', 'status', '127.0.0.1:1', '--timeout', '1']) == 1\n"
        "assert main(['convert', 'missing.tia', '-o', 'never.edf']) == 1\n"
        "assert not loaded('tia.server', 'tia.config', 'tia.sources', 'tia.daemon'), loaded('tia')\n"
        "assert main(['lsl', '127.0.0.1:1', '--timeout', '1', '--seconds', '1']) == 1\n"
        "assert not loaded('tia.server', 'tia.config', 'tia.daemon'), loaded('tia')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr


def test_record_help_explains_formats(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "record", "--help")
    for text in (".npz", ".csv", ".edf", ".bdf", "FILE_<type>.csv", "NaN", "BAD_ACQ_SKIP"):
        assert text in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.org", Address("example.org", 9000)),
        ("example.org:9100", Address("example.org", 9100)),
        (":9100", Address("127.0.0.1", 9100)),
        ("[::1]:9100", Address("::1", 9100)),
        ("[::1]", Address("::1", 9000)),
        ("::1", Address("::1", 9000)),
    ],
)
def test_parse_address(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "host:", "host:0", "host:65536", "host:x", "[::1", "[::1]x"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_address(text)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "info", "localhost:notaport")
    assert code == 2
    assert "invalid port 'notaport'" in err
    code, _, err = run(capsys)
    assert code == 2
    assert "COMMAND" in err
    code, _, err = run(capsys, "record", "-o", str(tmp_path / "out.txt"), "--seconds", "1")
    assert code == 2
    assert "use one of .npz, .csv, .edf, .bdf" in err
    existing = tmp_path / "exists.npz"
    existing.write_bytes(b"")
    code, _, err = run(capsys, "record", "-o", str(existing))
    assert code == 2
    assert "--force" in err
    code, _, _ = run(capsys, "monitor", "--seconds", "-1")
    assert code == 2


def test_no_server_exits_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    for command in (["info"], ["ping"], ["monitor", "--count", "1"]):
        code, out, err = run(capsys, *command, address, "--timeout", "2")
        assert code == 1
        assert out == ""
        assert err.count("\n") == 1
        assert f"cannot connect to {address}" in err
        assert "Traceback" not in err


# Every subcommand that connects, with the server's address (or --host) still to add.
CONNECTING = [
    ["info"], ["monitor", "--count", "1"], ["record", "-o", "OUTPUT"], ["ping"], ["event", "7"],
    ["recording", "start"], ["recording", "stop"], ["recording", "status"], ["lsl", "--seconds", "1"],
]


@pytest.mark.parametrize("command", CONNECTING, ids=" ".join)
def test_every_command_that_connects_says_cannot_connect_the_same_way(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    if command[0] == "lsl":
        pytest.importorskip("pylsl")  # without it, tia lsl says how to get it before connecting
    address = f"127.0.0.1:{free_port()}"
    argv = [str(tmp_path / "out.npz") if word == "OUTPUT" else word for word in command]
    argv += ["--host", address] if command[0] == "event" else [address]
    code, out, err = run(capsys, *argv, "--timeout", "2")
    assert (code, out) == (1, ""), err
    line = f"tia {command[0]}: error: cannot connect to {address}: Connection refused"
    if command[0] == "event":  # with a hint: the endpoint is off by default
        assert err.startswith(line + "; ") and "[events] endpoint" in err, err
        assert err.count("\n") == 1, err
    else:
        assert err == line + "\n"
    assert not (tmp_path / "out.npz").exists()


def test_sparkline() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([1.0, float("nan"), 1.0], "abc") == "b b"
    assert sparkline([]) == ""


# -- against the daemon ------------------------------------------------------


def test_info(capsys: pytest.CaptureFixture[str], ramp_server: str) -> None:
    code, out, err = run(capsys, "info", ramp_server)
    assert code == 0, err
    assert f"Server:   {ramp_server}" in out
    assert "Master:   1000 Hz, block size 10, 100 packets/s" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[5:]}
    assert rows["eeg"][:6] == ["eeg", "periodic", "1000", "10", "4", "uV"]
    assert " ".join(rows["eeg"][6:]) == "eeg1, eeg2, eeg3, eeg4"
    assert rows["bp"] == ["bp", "periodic", "100", "1", "1", "mmHg", "bp1"]


def test_info_subject_labels_and_aperiodic(
    capsys: pytest.CaptureFixture[str], event_server: str
) -> None:
    code, out, _ = run(capsys, "info", event_server)
    assert code == 0
    assert "Subject:  T02 (Ada Lovelace)" in out
    assert "Fp1, Fp2, Cz" in out
    event_row = next(line for line in out.splitlines() if line.startswith("event"))
    assert event_row.split() == ["event", "aperiodic", "100", "1", "1", "-", "trigger"]


def test_ping(capsys: pytest.CaptureFixture[str], ramp_server: str) -> None:
    code, out, _ = run(capsys, "ping", ramp_server, "-n", "3", "-i", "0")
    assert code == 0
    lines = out.splitlines()
    assert [line.split("seq=")[1].split()[0] for line in lines[:3]] == ["1", "2", "3"]
    summary = lines[3]
    assert summary.startswith(f"{ramp_server}: 3 replies, min ")
    figures = [float(word) for word in summary.replace(",", " ").split() if _is_number(word)]
    low, median, high = figures[1:4]
    assert 0 < low <= median <= high < 5000


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_monitor_plain_lines(capsys: pytest.CaptureFixture[str], ramp_server: str) -> None:
    code, out, err = run(capsys, "monitor", ramp_server, "--seconds", "1", "--interval", "0.5")
    assert code == 0, err
    lines = out.splitlines()
    assert "\x1b" not in out
    eeg = [line for line in lines if " eeg " in line]
    bp = [line for line in lines if " bp " in line]
    assert len(eeg) == len(bp) >= 2
    for line in eeg:
        words = line.split()
        packet_rate = float(words[words.index("pkt/s") - 1])
        sample_rate = float(words[words.index("Hz") - 1])
        assert 20 < packet_rate < 500
        assert 200 < sample_rate < 5000
        assert "gaps 0" in line
        assert "late" in line
        assert "eeg1=" in line and "eeg4=" in line
    assert "bp1=" in bp[-1]


def test_monitor_count(capsys: pytest.CaptureFixture[str], event_server: str) -> None:
    code, out, _ = run(
        capsys, "monitor", event_server, "--count", "2", "--interval", "0.3", "--channels", "2"
    )
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 8  # two refreshes: two signals and two sources each
    assert "Fp1=" in lines[0] and "Cz=" not in lines[0] and "+1 more" in lines[0]
    assert "events/s" in lines[1] and "trigger=" in lines[1]
    # a txtia server also says how each source is doing (GetServerStatus)
    assert lines[2].split(" s ", 1)[1] == "source eeg (ramp): streaming"
    assert lines[3].split(" s ", 1)[1] == "source markers (events): streaming"


def test_monitor_refreshes_in_place_on_a_terminal(
    capsys: pytest.CaptureFixture[str], ramp_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitor, "is_tty", lambda stream: True)
    code, out, _ = run(capsys, "monitor", ramp_server, "--count", "2", "--interval", "0.3")
    assert code == 0
    assert out.startswith("\x1b[?25l\x1b[J") and out.endswith("\x1b[?25h")
    first, second = out[len("\x1b[?25l\x1b[J") : -len("\x1b[?25h")].split("\x1b[J")
    assert first.endswith(f"\x1b[{first.count(chr(10))}F")  # back up over the first screen
    screen = second.splitlines()
    assert screen[0].startswith(f"tia monitor {ramp_server}")
    assert "gaps 0" in screen[0]
    assert screen[1].startswith("eeg") and "pkt/s" in screen[1]
    assert screen[2].split()[0] == "eeg1"
    assert set(screen[2].split()[1]) <= set(monitor.SPARK_BLOCKS)


def test_record_npz_exact_ramp(
    capsys: pytest.CaptureFixture[str], ramp_server: str, tmp_path: Path
) -> None:
    path = tmp_path / "ramp.npz"
    code, out, err = run(capsys, "record", ramp_server, "-o", str(path), "--seconds", "1")
    assert code == 0, err
    assert "gap" not in err
    assert f"wrote {path}" in out
    assert "100 packets, 0 missing" in out
    with np.load(path) as data:
        first = int(data["first_packet_id"])
        np.testing.assert_array_equal(data["packet_ids"], np.arange(first, first + 100))
        assert data["eeg"].dtype == np.float32
        np.testing.assert_array_equal(
            data["eeg"], np.array(ramp_values(4, first * 10, 1000), np.float32)
        )
        np.testing.assert_array_equal(
            data["bp"], np.array(ramp_values(1, first, 100), np.float32)
        )
        assert list(data["eeg_labels"]) == ["eeg1", "eeg2", "eeg3", "eeg4"]
        assert float(data["eeg_rate"]) == 1000.0
        assert float(data["bp_rate"]) == 100.0
        assert str(data["eeg_unit"]) == "uV"
        assert len(data["gaps"]) == 0
        assert len(data["events"]) == 0
        assert float(data["master_rate"]) == 1000.0


def read_line(stream: IO[str], seconds: float) -> str:
    """The next line ``stream`` (a pipe) delivers, waiting at most ``seconds`` for it."""
    ready, _, _ = select.select([stream], [], [], seconds)
    assert ready, f"no line within {seconds} s"
    return stream.readline()


@pytest.mark.parametrize("stop", [SIGTERM, SIGHUP, SIGINT], ids=lambda s: s.name)
def test_record_stopped_by_a_signal_writes_a_complete_file(
    ramp_server: str, tmp_path: Path, stop: Signals
) -> None:
    """``timeout``, ``kill``, systemd, a closed terminal and Ctrl-C all end a recording with its file."""
    path = tmp_path / "stopped.npz"
    process = subprocess.Popen(
        [sys.executable, "-m", "tia.cli", "record", ramp_server, "-o", str(path)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stderr is not None
        started = read_line(process.stderr, 30)  # written once the first packet is in
        assert started.startswith(f"tia: recording {ramp_server} to {path}"), started
        process.send_signal(stop)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert err == ""
    assert f"wrote {path}" in out
    with np.load(path) as data:
        first = int(data["first_packet_id"])
        ids = data["packet_ids"]
        assert len(ids) >= 1
        assert f"{len(ids)} packets, 0 missing" in out
        np.testing.assert_array_equal(ids, np.arange(first, first + len(ids)))
        np.testing.assert_array_equal(data["eeg"], np.array(ramp_values(4, first * 10, 10 * len(ids)), np.float32))
        np.testing.assert_array_equal(data["bp"], np.array(ramp_values(1, first, len(ids)), np.float32))
        assert len(data["gaps"]) == 0


def test_record_progress_bar_on_a_terminal(
    capsys: pytest.CaptureFixture[str], ramp_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(record, "is_tty", lambda stream: True)
    code, out, err = run(capsys, "record", ramp_server, "-o", str(tmp_path / "bar.npz"), "--seconds", "0.5")
    assert code == 0, err
    assert "50 packets, 0 missing" in out
    assert err.startswith("\r[") and err.endswith("\n"), err
    final = err.rstrip("\n").rsplit("\r", 1)[1]
    assert final.startswith(f"[{'#' * 30}] 100%  0.5/0.5 s  50 packets  missing 0"), final
    assert "tia: recording" not in err  # the bar says it


def test_record_in_process_leaves_the_signal_handlers_as_they_were(
    capsys: pytest.CaptureFixture[str], ramp_server: str, tmp_path: Path
) -> None:
    before = {number: getsignal(number) for number in (SIGINT, SIGTERM, SIGHUP)}
    code, _, err = run(capsys, "record", ramp_server, "-o", str(tmp_path / "short.npz"), "--seconds", "0.1")
    assert code == 0, err
    assert {number: getsignal(number) for number in before} == before


def _ramp_phase(first_value: float) -> int:
    """The global sample index (mod 1000) of a channel-1 ramp value."""
    return round(first_value) - 1000


def test_record_csv(capsys: pytest.CaptureFixture[str], ramp_server: str, tmp_path: Path) -> None:
    path = tmp_path / "ramp.csv"
    code, out, err = run(capsys, "record", ramp_server, "-o", str(path), "--seconds", "0.5")
    assert code == 0, err
    bp_path = tmp_path / "ramp_bp.csv"
    assert f"wrote {bp_path}" in out
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["time_s", "eeg:eeg1", "eeg:eeg2", "eeg:eeg3", "eeg:eeg4"]
    table = np.array(rows[1:], dtype=np.float64)
    assert table.shape == (500, 5)
    np.testing.assert_allclose(table[:, 0], np.arange(500) / 1000)
    start = _ramp_phase(table[0, 1])
    np.testing.assert_array_equal(table[:, 1:].T, ramp_values(4, start, 500))
    with open(bp_path, newline="") as handle:
        bp_rows = list(csv.reader(handle))
    assert bp_rows[0] == ["time_s", "bp:bp1"]
    assert bp_rows[1][0] == "0.00" and bp_rows[2][0] == "0.01"
    bp = np.array(bp_rows[1:], dtype=np.float64)
    assert bp.shape == (50, 2)
    np.testing.assert_array_equal(bp[:, 1], ramp_values(1, _ramp_phase(bp[0, 1]), 50)[0])
    assert _ramp_phase(bp[0, 1]) * 10 % 1000 == start  # both start at the same packet


@pytest.mark.parametrize("suffix", [".edf", ".bdf"])
def test_record_edf_bdf(
    capsys: pytest.CaptureFixture[str], ramp_server: str, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"ramp{suffix}"
    code, _, err = run(capsys, "record", ramp_server, "-o", str(path), "--seconds", "1")
    assert code == 0, err
    document = edfio.read_edf(path) if suffix == ".edf" else edfio.read_bdf(path)
    assert document.labels == ("EEG eeg1", "EEG eeg2", "EEG eeg3", "EEG eeg4", "MISC bp1")
    assert [s.transducer_type for s in document.signals] == ["TiA eeg"] * 4 + ["TiA bp"]
    assert [s.sampling_frequency for s in document.signals] == [1000.0] * 4 + [100.0]
    assert [s.physical_dimension for s in document.signals] == ["uV"] * 4 + ["mmHg"]
    assert document.duration == 1.0
    assert document.annotations == ()
    eeg = np.array([s.data for s in document.signals[:4]])
    start = _ramp_phase(float(eeg[0, 0]))
    signals: Sequence[edfio.EdfSignal | edfio.BdfSignal] = document.signals
    for signal, row, expected in zip(signals[:4], eeg, ramp_values(4, start, 1000), strict=True):
        low, high = signal.physical_range
        digital_low, digital_high = signal.digital_range
        step = (high - low) / (digital_high - digital_low)
        assert low < high
        np.testing.assert_allclose(row, expected, rtol=0, atol=step)
    bp = document.signals[4]
    np.testing.assert_allclose(
        bp.data, ramp_values(1, _ramp_phase(float(bp.data[0])), 100)[0], rtol=0, atol=0.02
    )


def test_record_events(
    capsys: pytest.CaptureFixture[str], event_server: str, tmp_path: Path
) -> None:
    npz = tmp_path / "events.npz"
    code, _, err = run(capsys, "record", event_server, "-o", str(npz), "--seconds", "1")
    assert code == 0, err
    with np.load(npz) as data:
        events = data["events"]
        first = int(data["first_packet_id"])
        assert data["eeg"].shape == (3, 1000)
        assert list(data["eeg_labels"]) == ["Fp1", "Fp2", "Cz"]
    assert 4 <= len(events) <= 6
    assert set(events["signal"]) == {"event"} and set(events["label"]) == {"trigger"}
    values = list(events["value"])
    assert set(values) == {5.0, 6.0}
    assert all(a != b for a, b in itertools.pairwise(values))  # 5, 6, 5, ...
    assert set(np.diff(events["sample"])) == {200}
    np.testing.assert_array_equal(events["sample"], (events["packet_id"] - first) * 10)
    np.testing.assert_allclose(events["time_s"], events["sample"] / 1000)

    edf = tmp_path / "events.edf"
    code, _, err = run(capsys, "record", event_server, "-o", str(edf), "--seconds", "1")
    assert code == 0, err
    document = edfio.read_edf(edf)
    assert document.labels == ("EEG Fp1", "EEG Fp2", "EEG Cz")
    annotations = document.annotations
    assert 4 <= len(annotations) <= 6
    assert {a.text for a in annotations} == {"trigger=5", "trigger=6"}
    onsets = np.array([a.onset for a in annotations])
    np.testing.assert_allclose(np.diff(onsets), 0.2, atol=1e-9)
    assert document.patient.code == "T02"

    table = tmp_path / "events.csv"
    code, _, err = run(capsys, "record", event_server, "-o", str(table), "--seconds", "0.5")
    assert code == 0, err
    with open(tmp_path / "events_events.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["time_s", "sample", "packet_id", "signal", "label", "value"]
    assert {row[4] for row in rows[1:]} == {"trigger"}
    assert 2 <= len(rows) - 1 <= 3


def test_record_edf_opens_in_mne(
    capsys: pytest.CaptureFixture[str], event_server: str, tmp_path: Path
) -> None:
    mne = pytest.importorskip("mne")
    path = tmp_path / "events.bdf"
    code, _, err = run(capsys, "record", event_server, "-o", str(path), "--seconds", "1")
    assert code == 0, err
    raw = mne.io.read_raw_bdf(path, preload=True, infer_types=True, verbose="error")
    assert raw.ch_names == ["Fp1", "Fp2", "Cz"]
    assert raw.get_channel_types() == ["eeg"] * 3
    assert raw.info["sfreq"] == 1000.0
    data = raw.get_data()  # volts: the file says uV
    assert 1e-3 <= data[0].min() and data[0].max() < 2e-3
    _, event_ids = mne.events_from_annotations(raw, verbose="error")
    assert set(event_ids) == {"trigger=5", "trigger=6"}


# -- the recorder on crafted packets -----------------------------------------


def two_signal_meta() -> MetaInfo:
    return MetaInfo(
        100.0,
        2,
        (
            SignalInfo(by_name("eeg"), 100.0, 2, ("C3", None)),
            SignalInfo(by_name("bp"), 50.0, 1, ("BP",)),
            SignalInfo(by_name("button"), 50.0, 1, ("left", "right")),
        ),
    )


def packet(
    packet_id: int, number: int, eeg: bool = True, button: tuple[float, float] | None = None
) -> DataPacket:
    signals = {}
    if eeg:
        signals[EEG] = np.array([[packet_id * 2, packet_id * 2 + 1]] * 2, np.float32)
    signals[BP] = np.array([[packet_id]], np.float32)
    if button is not None:
        signals[0x40] = np.array([[button[0]], [button[1]]], np.float32)
    flags = 0
    for flag in signals:
        flags |= flag
    return DataPacket(packet_id, number, packet_id * 20_000, flags, signals)


def test_recorder_gaps_become_nan_and_are_reported(tmp_path: Path) -> None:
    recorder = Recorder(two_signal_meta())
    assert recorder.feed(packet(10, 0)) == []
    assert recorder.feed(packet(11, 1)) == []
    gaps = recorder.feed(packet(14, 4))
    assert len(gaps) == 1 and (gaps[0].packet_id, gaps[0].count) == (12, 2)
    assert "2 packets missing from packet id 12" in gaps[0].describe(recorder.packet_period)
    assert "NaN" in gaps[0].describe(recorder.packet_period)
    # eeg absent from two packets in a row: one gap, extended
    assert [g.signal for g in recorder.feed(packet(15, 5, eeg=False))] == ["eeg"]
    assert recorder.feed(packet(16, 6, eeg=False)) == []
    assert recorder.feed(packet(17, 7)) == []
    assert recorder.missing_packets == 2
    assert recorder.missing_blocks == 2
    assert recorder.packet_span == 8 and recorder.duration == pytest.approx(0.16)
    eeg = recorder.signal_data("eeg")
    assert eeg.shape == (2, 16)
    missing = np.isnan(eeg[0])
    assert list(np.flatnonzero(missing)) == [4, 5, 6, 7, 10, 11, 12, 13]
    np.testing.assert_array_equal(eeg[0, ~missing], [20, 21, 22, 23, 28, 29, 34, 35])
    np.testing.assert_array_equal(
        recorder.signal_data("bp")[0], [10, 11, np.nan, np.nan, 14, 15, 16, 17]
    )

    npz = tmp_path / "gaps.npz"
    write_recording(recorder, npz)
    with np.load(npz) as data:
        assert list(data["eeg_labels"]) == ["C3", "eeg2"]
        assert [tuple(g) for g in data["gaps"].tolist()] == [(12, 2, ""), (15, 2, "eeg")]
        np.testing.assert_array_equal(data["packet_ids"], [10, 11, 14, 15, 16, 17])

    edf = tmp_path / "gaps.edf"
    write_recording(recorder, edf)
    document = edfio.read_edf(edf)
    assert document.labels == ("EEG C3", "EEG eeg2", "MISC BP")
    skips = [(a.onset, a.duration, a.text) for a in document.annotations]
    assert skips == [
        (0.04, 0.04, "BAD_ACQ_SKIP"),
        (0.1, 0.04, "BAD_ACQ_SKIP eeg"),
    ]
    c3 = document.signals[0]
    assert c3.physical_min < 20
    step = (c3.physical_max - c3.physical_min) / (c3.digital_max - c3.digital_min)
    read = c3.data
    np.testing.assert_allclose(read[missing], c3.physical_min, rtol=0, atol=2 * step)
    assert read[~missing].min() > c3.physical_min + 2 * step
    np.testing.assert_allclose(read[~missing], eeg[0, ~missing], rtol=0, atol=step)


def test_recorder_button_state_changes_become_events() -> None:
    recorder = Recorder(two_signal_meta())
    recorder.feed(packet(5, 0, button=(0, 0)))
    recorder.feed(packet(6, 1))
    recorder.feed(packet(7, 2, button=(1, 0)))
    recorder.feed(packet(8, 3, button=(1, 1)))
    assert [(e.sample, e.label, e.value) for e in recorder.events] == [
        (0, "left", 0.0),
        (0, "right", 0.0),
        (4, "left", 1.0),
        (6, "right", 1.0),
    ]


def test_recorder_accepts_client_packets() -> None:
    from tia.client.blocking import TiAPacket

    recorder = Recorder(two_signal_meta())
    recorder.feed(TiAPacket.from_data_packet(packet(3, 0)))
    np.testing.assert_array_equal(recorder.signal_data("eeg"), [[6, 7], [6, 7]])


def test_recorder_rejects_foreign_packets(tmp_path: Path) -> None:
    recorder = Recorder(two_signal_meta())
    with pytest.raises(RecordingError, match="nothing to write"):
        write_recording(recorder, tmp_path / "empty.npz")
    recorder.feed(packet(5, 0))
    with pytest.raises(RecordingError, match="went back"):
        recorder.feed(packet(5, 1))
    wrong = DataPacket(6, 1, 0, EEG, {EEG: np.zeros((3, 2), np.float32)})
    with pytest.raises(RecordingError, match=r"shape \(3, 2\), the metainfo says 2 channels"):
        recorder.feed(wrong)
    alien = DataPacket(6, 1, 0, 0x400, {0x400: np.zeros((1, 1), np.float32)})
    with pytest.raises(RecordingError, match="absent from the metainfo"):
        recorder.feed(alien)
    with pytest.raises(RecordingError, match="use one of"):
        write_recording(recorder, tmp_path / "file.mat")


@pytest.mark.parametrize(
    ("packets", "period", "layout"),
    [
        (200, Fraction(1, 100), (100, 0)),  # 1 s records
        (130, Fraction(1, 100), (65, 0)),  # the longest divisor up to 1 s
        (997, Fraction(1, 100), (1, 0)),  # prime: one packet per record
        (64, Fraction(1, 32), (32, 0)),
        (7, Fraction(1, 3), (3, 2)),  # 1/3 s has no exact decimal: pad to 1 s
        (5, Fraction(3, 2), (1, 0)),
    ],
)
def test_record_layout(packets: int, period: Fraction, layout: tuple[int, int]) -> None:
    assert _record_layout(packets, period) == layout


def test_monitor_counts_gaps_and_late_packets_from_the_connection_numbers() -> None:
    from tia.client.packet import TiAPacket

    eeg = by_name("eeg")
    meta = MetaInfo(100.0, 1, (SignalInfo(eeg, 100.0, 1, ("c1",)),))
    stats = monitor.MonitorStats(meta, late=1.0)
    for number in (0, 1, 4, 2, 5):  # 2 and 3 missing, then 2 comes late
        packet = DataPacket(number, number, 0, eeg.flag, {eeg.flag: np.zeros((1, 1), np.float32)})
        stats.add(TiAPacket.from_data_packet(packet), arrival=number / 100)
    assert (stats.sequence.gaps, stats.sequence.lost, stats.sequence.reordered) == (1, 1, 1)
    assert stats.packets == 5
