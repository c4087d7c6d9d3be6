"""Benchmark harness: ``python -m bench [--workload W1 ...] [--seconds N]``.

Starts ``twistd -n tia`` as a separate process with synthetic signals, drives
load clients from worker processes (raw sockets, fixed headers only), samples
the server's CPU and RSS from /proc, and prints one row per workload:
packets expected and received, loss, connection-number gaps, arrival jitter
(residuals around a fitted line, so independent of timestamp units), rate
error in ppm (through each second's least-delayed arrival, so clients that
fall behind do not tilt it), server CPU (% of one core), RSS and the share of ticks the
server produced late (from its ``/status``). Results go to
bench/results/<time>.json for comparison between commits.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np

from tia.protocol.control import ControlMessage, ControlParser, build_message

ROOT = Path(__file__).resolve().parent.parent
HEADER = struct.Struct("<BIIQQQ")


@dataclass(frozen=True)
class Workload:
    name: str
    signal: str  # --signal TYPE:CHANNELS:RATE:BLOCKSIZE[:WAVE]
    clients: int
    transport: str = "TCP"  # or "multicast": one shared group stream, ``clients`` receivers
    group_port: int = 0
    max_connections: int | None = None  # [server] max_connections, when not the default (64)

    @property
    def packet_rate(self) -> float:
        _, _, rate, block = self.signal.split(":")[:4]
        return float(rate) / float(block)


WORKLOADS = {
    "W1": Workload("W1", "eeg:64:1000:1", 10),
    "W2": Workload("W2", "eeg:64:1000:1", 50),
    "W3": Workload("W3", "eeg:256:2048:8", 32),
    "W4": Workload("W4", "eeg:64:1000:1", 200, transport="multicast"),
    "W1-1": Workload("W1-1", "eeg:64:1000:1", 1),
    "W4-1": Workload("W4-1", "eeg:64:1000:1", 1, transport="multicast"),
}
MULTICAST_GROUP = "239.255.77.1"
PLACEHOLDER_SOURCE = """
[source:placeholder]
driver = sine
rate = 1000
blocksize = 1
channels = 1
type = eeg
"""
MULTICAST_INI = """
[udp]
mode = multicast
address = {group}
port = {port}
interface = 127.0.0.1
""" + PLACEHOLDER_SOURCE


@dataclass
class Row:
    workload: str
    clients: int
    seconds: float
    expected_per_client: float
    received_per_client: float
    loss: int
    gaps: int
    jitter_p50_ms: float
    jitter_p99_ms: float
    jitter_max_ms: float
    rate_error_ppm: float
    cpu_percent: float
    rss_mib: float
    rss_start_mib: float = 0.0  # at the start of the measured window: growth = rss_mib / this
    late_percent: float = float("nan")  # ticks the server produced late (caught up), from its /status


# ----------------------------------------------------------------- load clients


def request(
    sock: socket.socket, command: str, parameter: str | None = None, content: bytes = b""
) -> ControlMessage:
    """One control request on a blocking socket and its reply, parsed by the protocol core."""
    sock.sendall(build_message(command, parameter, content))
    parser = ControlParser()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the control connection")
        for reply in parser.feed(chunk):
            if reply.is_error:
                raise RuntimeError(f"{command}: {reply.error_text()}")
            return reply


def cut_headers(buffer: bytearray) -> list[tuple[int, int]]:
    """(packet id, connection number) of each complete packet at the front of ``buffer``,
    removed from it; only fixed headers are read, so load clients stay cheap."""
    headers = []
    offset = 0
    while len(buffer) - offset >= HEADER.size:
        _, size, _, packet_id, number, _ = HEADER.unpack_from(buffer, offset)
        if len(buffer) - offset < size:
            break
        offset += size
        headers.append((packet_id, number))
    del buffer[:offset]
    return headers


def _client_worker(port: int, count: int, seconds: float, warmup: float, queue: Any) -> None:
    """Open ``count`` streaming clients, record (packet id, connection number, arrival) per packet."""
    selector = selectors.DefaultSelector()
    states = []
    for _ in range(count):
        control = socket.create_connection(("127.0.0.1", port))
        reply = request(control, "GetDataConnection", "TCP")
        data = socket.create_connection(("127.0.0.1", int(reply.parameter or 0)))
        data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        request(control, "StartDataTransmission")
        data.setblocking(False)
        state: dict[str, Any] = {"control": control, "buffer": bytearray(), "ids": [], "numbers": [], "times": []}
        selector.register(data, selectors.EVENT_READ, state)
        states.append(state)
    start = time.monotonic()
    record_from = start + warmup
    end = record_from + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        for key, _ in selector.select(timeout=0.05):
            state = key.data
            arrival = time.monotonic_ns()
            try:
                chunk = cast(socket.socket, key.fileobj).recv(1 << 20)
            except BlockingIOError:
                continue
            state["buffer"] += chunk
            for packet_id, number in cut_headers(state["buffer"]):
                if arrival >= record_from * 1e9:
                    state["ids"].append(packet_id)
                    state["numbers"].append(number)
                    state["times"].append(arrival)
    results = []
    for state in states:
        results.append((state["ids"], state["numbers"], state["times"]))
        state["control"].close()
    queue.put(results)


def _multicast_worker(group_port: int, count: int, seconds: float, warmup: float, queue: Any) -> None:
    """``count`` sockets joined to the group, each recording what it receives."""
    selector = selectors.DefaultSelector()
    states = []
    membership = socket.inet_aton(MULTICAST_GROUP) + socket.inet_aton("127.0.0.1")
    for _ in range(count):
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        receiver.bind(("", group_port))
        receiver.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        receiver.setblocking(False)
        state: dict[str, Any] = {"socket": receiver, "ids": [], "numbers": [], "times": []}
        selector.register(receiver, selectors.EVENT_READ, state)
        states.append(state)
    record_from = time.monotonic() + warmup
    end = record_from + seconds
    while time.monotonic() < end:
        for key, _ in selector.select(timeout=0.05):
            state = key.data
            while True:
                try:
                    datagram = state["socket"].recv(65536)
                except BlockingIOError:
                    break
                arrival = time.monotonic_ns()
                if arrival >= record_from * 1e9:
                    _, _, _, packet_id, number, _ = HEADER.unpack_from(datagram, 0)
                    state["ids"].append(packet_id)
                    state["numbers"].append(number)
                    state["times"].append(arrival)
    queue.put([(state["ids"], state["numbers"], state["times"]) for state in states])


# ----------------------------------------------------------------- server process


def _twistd() -> str:
    candidate = Path(sys.executable).with_name("twistd")
    return str(candidate) if candidate.exists() else (shutil.which("twistd") or "twistd")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _server_ticks(web_port: int) -> tuple[int, int]:
    """(ticks sent, ticks produced late) from the server's ``/status``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/status", timeout=5) as reply:
        status = json.load(reply)
    return int(status["ticks_sent"]), int(status["late_ticks"])


def _start_server(workload: Workload, log: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    """The daemon, its control port and its web monitor's port (for ``/status``; no browser attached)."""
    port, web_port = _free_port(), _free_port()
    config = ROOT / "etc" / "server.ini"
    if workload.transport == "multicast":
        config = log.with_name("multicast.ini")
        config.write_text(MULTICAST_INI.format(group=MULTICAST_GROUP, port=workload.group_port))
    elif workload.max_connections is not None:
        config = log.with_name("server.ini")
        config.write_text(f"[server]\nmax_connections = {workload.max_connections}\n{PLACEHOLDER_SOURCE}")
    process = subprocess.Popen(
        [_twistd(), "-n", "--pidfile=", f"--logfile={log}", "tia", "--config", str(config),
         "--port", str(port), "--signal", workload.signal, "--web", f"tcp:{web_port}:interface=127.0.0.1"],
        cwd=tempfile.gettempdir(),
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port, web_port
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start, see {log}") from None
            time.sleep(0.1)


ClientRecord = tuple[list[int], list[int], list[int]]  # packet ids, connection numbers, arrival ns


def _envelope_rate(ids: np.ndarray, arrivals: np.ndarray, nominal: float) -> float:
    """The server's packet rate from the fastest arrival in each second.

    An arrival is the send time plus a delay that is never negative (the load
    client may be scheduled late, never early), so a line through each
    second's least-delayed packet follows the sender's clock; a fit through
    all of them would tilt whenever the clients fall behind during the run.
    """
    delay = arrivals - ids / nominal  # grows by (1/rate - 1/nominal) per packet
    second = np.floor(ids / nominal)
    fastest_ids, fastest = [], []
    for value in np.unique(second):
        mask = second == value
        index = int(np.argmin(delay[mask]))
        fastest_ids.append(ids[mask][index])
        fastest.append(delay[mask][index])
    if len(fastest) < 3:
        slope = float(np.polyfit(ids, delay, 1)[0])
    else:
        slope = float(np.polyfit(fastest_ids, fastest, 1)[0])
    return 1.0 / (slope + 1.0 / nominal)


class StreamStats(TypedDict):
    """What the clients of one run received, as ``Row`` reports it."""

    expected_per_client: float
    received_per_client: float
    loss: int
    gaps: int
    jitter_p50_ms: float
    jitter_p99_ms: float
    jitter_max_ms: float
    rate_error_ppm: float


def _analyse(workload: Workload, seconds: float, results: list[ClientRecord]) -> StreamStats:
    expected = seconds * workload.packet_rate
    received, gaps, loss, residuals, rates = [], 0, 0, [], []
    for ids, numbers, times in results:
        received.append(len(ids))
        if len(numbers) > 1:
            steps = np.diff(np.asarray(numbers))
            gaps += int(np.count_nonzero(steps != 1))
            loss += int(np.sum(steps[steps > 1] - 1))  # numbers skipped: packets the server dropped
        if len(ids) > 10:
            x = np.asarray(ids, dtype=np.float64)
            t = (np.asarray(times, dtype=np.float64) - times[0]) / 1e9
            slope, intercept = np.polyfit(x, t, 1)  # seconds per packet
            residuals.append(np.abs(t - (slope * x + intercept)))
            rates.append(_envelope_rate(x, t, workload.packet_rate))
    all_residuals = np.concatenate(residuals) if residuals else np.array([np.nan])
    rate = float(np.median(rates)) if rates else float("nan")
    return {
        "expected_per_client": expected,
        "received_per_client": float(np.mean(received)) if received else 0.0,
        "loss": loss,
        "gaps": gaps,
        "jitter_p50_ms": float(np.percentile(all_residuals, 50) * 1e3),
        "jitter_p99_ms": float(np.percentile(all_residuals, 99) * 1e3),
        "jitter_max_ms": float(np.max(all_residuals) * 1e3),
        "rate_error_ppm": (rate / workload.packet_rate - 1.0) * 1e6,
    }


def run(workload: Workload, seconds: float, warmup: float, workers: int) -> Row:
    if workload.transport == "multicast":
        workload = replace(workload, group_port=_free_port())
    with tempfile.TemporaryDirectory() as tmp:
        process, port, web_port = _start_server(workload, Path(tmp) / "server.log")
        try:
            queue: Any = multiprocessing.get_context("fork").Queue()
            per_worker = [workload.clients // workers + (i < workload.clients % workers) for i in range(workers)]
            target: Callable[..., None]
            if workload.transport == "multicast":
                # one control client starts the shared group stream; the receivers only listen
                starter = socket.create_connection(("127.0.0.1", port))
                request(starter, "GetDataConnection", "UDP")
                request(starter, "StartDataTransmission")
                target, target_args = _multicast_worker, (workload.group_port,)
            else:
                target, target_args = _client_worker, (port,)
            procs = [
                multiprocessing.get_context("fork").Process(
                    target=target, args=(*target_args, n, seconds, warmup, queue)
                )
                for n in per_worker if n
            ]
            for proc in procs:
                proc.start()
            time.sleep(warmup + 0.5)
            cpu0, wall0 = _cpu_seconds(process.pid), time.monotonic()
            rss_start = _rss_mib(process.pid)
            ticks0, late0 = _server_ticks(web_port)
            time.sleep(max(0.0, seconds - 1.0))
            cpu1, wall1 = _cpu_seconds(process.pid), time.monotonic()
            rss = _rss_mib(process.pid)
            ticks1, late1 = _server_ticks(web_port)
            results = []
            for _ in procs:
                results.extend(queue.get(timeout=seconds + warmup + 60))
            for proc in procs:
                proc.join()
        finally:
            process.terminate()
            process.wait(timeout=30)
    stats = _analyse(workload, seconds, results)
    return Row(
        workload.name, workload.clients, seconds, cpu_percent=100.0 * (cpu1 - cpu0) / (wall1 - wall0),
        rss_mib=rss, rss_start_mib=rss_start, late_percent=100.0 * (late1 - late0) / max(ticks1 - ticks0, 1),
        **stats,
    )


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'workload':8} {'clients':>7} {'pkt/s exp':>9} {'pkt/s rx':>9} {'loss':>5} {'gaps':>5} "
        f"{'jit p50':>8} {'jit p99':>8} {'jit max':>8} {'rate ppm':>9} {'CPU %':>6} {'RSS MiB':>8} {'RSS +%':>6} "
        f"{'late %':>6}"
    )
    sys.stdout.write(header + "\n" + "-" * len(header) + "\n")
    for row in rows:
        sys.stdout.write(
            f"{row.workload:8} {row.clients:7d} {row.expected_per_client / row.seconds:9.1f} "
            f"{row.received_per_client / row.seconds:9.1f} {row.loss:5d} {row.gaps:5d} "
            f"{row.jitter_p50_ms:7.3f}m {row.jitter_p99_ms:7.3f}m {row.jitter_max_ms:7.3f}m "
            f"{row.rate_error_ppm:9.1f} {row.cpu_percent:6.1f} {row.rss_mib:8.1f} "
            f"{100 * (row.rss_mib / row.rss_start_mib - 1):6.1f} {row.late_percent:6.2f}\n"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", "-w", action="append", choices=[*sorted(WORKLOADS), "W5"],
                        help="workload(s) to run (default: W1); W5 measures client decoding")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per workload")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="JSON results folder")
    args = parser.parse_args(argv)
    names = args.workload or ["W1"]
    rows = [run(WORKLOADS[name], args.seconds, args.warmup, args.workers) for name in names if name != "W5"]
    if rows:
        print_table(rows)
    decode_rows = []
    if "W5" in names:
        from bench.decode import main as decode_main

        decode_rows = [
            {"client": client, "packets_per_s": packets, "samples_per_s": samples}
            for client, packets, samples in decode_main(args.seconds)
        ]
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.out / f"{stamp}.json"
    machine = {"cpus": os.cpu_count(), "load": os.getloadavg(), "python": sys.version.split()[0]}
    path.write_text(
        json.dumps({"machine": machine, "rows": [asdict(r) for r in rows], "decode": decode_rows}, indent=2)
    )
    sys.stdout.write(f"\nsaved {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
