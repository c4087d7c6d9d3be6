"""The real command: ``twistd -n tia`` in a subprocess, streamed from, then stopped by SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_port, wait_for_port

from tia.protocol.control import ControlParser
from tia.protocol.packet import DataPacket, PacketStreamDecoder

ROOT = Path(__file__).resolve().parent.parent


def twistd() -> str:
    candidate = Path(sys.executable).with_name("twistd")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("twistd")
    if found is None:
        pytest.skip("no twistd script next to the interpreter or on PATH")
    return found


def request(sock: socket.socket, parser: ControlParser, command: str) -> str | None:
    sock.sendall(f"TiA 1.0\n{command}\n\n".encode())
    while True:
        messages = parser.feed(sock.recv(65536))
        if messages:
            assert messages[0].command != "Error", messages[0]
            return messages[0].parameter


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    process = subprocess.Popen(
        [twistd(), "-n", "--pidfile=", "--logfile=-", "tia", "--config", str(ROOT / "etc" / "server.ini"),
         "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(process, port)
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout:
            process.stdout.close()


@pytest.mark.slow
def test_twistd_serves_the_default_config_and_stops_gracefully(
    daemon: tuple[subprocess.Popen[bytes], int]
) -> None:
    process, port = daemon
    control = socket.create_connection(("127.0.0.1", port), timeout=10)
    parser = ControlParser()
    request(control, parser, "CheckProtocolVersion")
    state_port = int(request(control, parser, "GetServerStateConnection") or 0)
    state = socket.create_connection(("127.0.0.1", state_port), timeout=10)
    assert state.recv(100) == b"TiA 1.0\nServerStateRunning\n\n"
    data_port = int(request(control, parser, "GetDataConnection:TCP") or 0)
    data = socket.create_connection(("127.0.0.1", data_port), timeout=10)
    request(control, parser, "StartDataTransmission")
    decoder = PacketStreamDecoder()
    packets: list[DataPacket] = []
    while len(packets) < 5:
        packets.extend(decoder.feed(data.recv(65536)))
    assert [p.connection_number for p in packets[:5]] == [0, 1, 2, 3, 4]

    process.send_signal(signal.SIGTERM)
    assert state.recv(100) == b"TiA 1.0\nServerStateShutdown\n\n"
    assert state.recv(100) == b""  # then the server closes it
    while data.recv(65536):  # data connection closed cleanly (EOF, not reset)
        pass
    assert control.recv(100) == b""
    # twistd re-raises the signal it stopped on, after the graceful shutdown ran
    assert process.wait(timeout=15) in (0, -signal.SIGTERM)
    output = process.stdout.read().decode() if process.stdout else ""
    assert "TiA server stopping" in output
    assert "Traceback" not in output
    for sock in (state, data, control):
        sock.close()


@pytest.mark.slow
def test_twistd_refuses_a_bad_config_with_file_section_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ini"
    bad.write_text("[source:eeg]\ndriver = sine\nrate = 512\nblocksize = 16\nchannels = 4\ntype = eeg\nfrequncy = 3\n")
    result = subprocess.run(
        [twistd(), "-n", "--pidfile=", "tia", "--config", str(bad)],
        cwd=tmp_path, capture_output=True, timeout=60,
        env={**os.environ},
    )
    assert result.returncode != 0
    assert f"{bad} [source:eeg] frequncy: unknown key" in result.stdout.decode() + result.stderr.decode()


def twistd_command(*args: str, missing: str | None = None) -> list[str]:
    """``twistd -n tia ARGS`` with its default pid file; ``missing``: run as if that package were not installed."""
    if missing is None:
        return [twistd(), "-n", "tia", *args]
    prelude = (f"import sys; sys.modules[{missing!r}] = None; sys.argv = ['twistd', '-n', 'tia', *sys.argv[1:]]; "
               "from twisted.scripts.twistd import run; run()")
    return [sys.executable, "-c", prelude, *args]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


EEG_INI = "[source:eeg]\ndriver = sine\nrate = 256\nblocksize = 8\nchannels = 4\ntype = eeg\n"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("ini", "args", "missing", "line"),
    [
        (EEG_INI + "frequncy = 3\n", ["--config", "{ini}"], None,
         "{ini} [source:eeg] frequncy: unknown key for driver 'sine' (its options: amplitude, frequency, offset, "
         "phase)"),
        (None, ["--signal", "eeg:16:512:16", "--signal", "bp:1:64:x"], None,
         "--signal #2 'bp:1:64:x': BLOCKSIZE 'x' is not a number of samples per packet (1..65535)"),
        (None, ["--signal", "eeg:4:512:16", "--signal", "button:2:64:1"], None,
         "--signal #2 'button:2:64:1': button is aperiodic and sent at most once per packet, at the packet grid "
         "(32:1): write button:2 or button:2:0:0"),
        (None, ["--port", "90o0"], None, "--port '90o0': not a TCP port (0..65535)"),
        (EEG_INI + "[recording]\nenabled = on\nformats = bdf\n", ["--config", "{ini}"], "edfio",
         "{ini} [recording] formats: recording EDF/BDF needs edfio: pip install 'txtia[record]'"),
        (None, ["--port", "{taken}"], None,
         "--port {taken}: cannot listen on tcp:{taken}:interface=127.0.0.1: Address already in use "
         "(another program, or a second daemon, has it)"),
        ("[server]\ncontrol = tcp:{taken}:interface=127.0.0.1\n" + EEG_INI, ["--config", "{ini}"], None,
         "{ini} [server] control: cannot listen on tcp:{taken}:interface=127.0.0.1: Address already in use "
         "(another program, or a second daemon, has it)"),
        ("[events]\nendpoint = tcp:{taken}:interface=127.0.0.1\n[source:t]\ndriver = injected\nchannels = t:event\n"
         + EEG_INI, ["--config", "{ini}", "--port", "0"], None,
         "{ini} [events] endpoint: cannot listen on tcp:{taken}:interface=127.0.0.1: Address already in use "
         "(another program, or a second daemon, has it)"),
    ],
    ids=["config", "signal", "aperiodic-signal", "port", "missing-extra", "taken-port", "taken-control",
         "taken-events"],
)
def test_a_start_up_error_is_one_line_without_usage_traceback_or_pid_file(
    tmp_path: Path, taken_port: int, ini: str | None, args: list[str], missing: str | None, line: str
) -> None:
    path = tmp_path / "lab.ini"
    if ini is not None:
        path.write_text(ini.format(taken=taken_port))
    fields = {"ini": str(path), "taken": taken_port}
    result = subprocess.run(
        twistd_command(*(arg.format(**fields) for arg in args), missing=missing),
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert (result.returncode, result.stderr, result.stdout) == (1, line.format(**fields) + "\n", "")
    assert not (tmp_path / "twistd.pid").exists()


def test_a_source_that_ends_with_stop_server_stops_the_daemon_gracefully(tmp_path: Path) -> None:
    """on_end = stop-server: the state client hears ServerStateShutdown, twistd exits by itself."""
    rows = "\n".join(f"{k},{2 * k}" for k in range(300))  # 3 s at 100 Hz
    (tmp_path / "short.csv").write_text("a:eeg,b:eeg\n" + rows + "\n")
    port = free_port()
    (tmp_path / "replay.ini").write_text(
        f"[server]\ncontrol = tcp:{port}:interface=127.0.0.1\n"
        "[source:file]\ndriver = replay\nfile = short.csv\nrate = 100\nblocksize = 10\non_end = stop-server\n"
    )
    process = subprocess.Popen(
        [twistd(), "-n", "--pidfile=", "--logfile=-", "tia", "--config", "replay.ini"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(process, port)
        control = socket.create_connection(("127.0.0.1", port), timeout=10)
        state_port = int(request(control, ControlParser(), "GetServerStateConnection") or 0)
        state = socket.create_connection(("127.0.0.1", state_port), timeout=10)
        heard = b""
        while True:
            chunk = state.recv(4096)  # the server closes it after the shutdown message
            if not chunk:
                break
            heard += chunk
        assert heard == b"TiA 1.0\nServerStateRunning\n\nTiA 1.0\nServerStateShutdown\n\n"
        assert process.wait(timeout=30) == 0
        output = process.stdout.read().decode() if process.stdout else ""
        assert "finished at tick 30" in output and "stopping the server" in output
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
