"""Soak test: ``python -m bench.soak [--minutes 30] [--workload W2]``.

Runs the daemon (``twistd -n tia``, started by the benchmark's own helper)
under a benchmark workload (default W2: 64 ch x 1 kHz, blocksize 1, 50 TCP
clients) for a long time, while other clients churn (one joins, streams and
leaves every second, in one of four ways) and one hostile client cycles
through garbage, endless lines, bad Content-Lengths, invalid UTF-8, XML
bombs, request floods, connection floods, idle connections and a data
connection it never reads. At the end the healthy clients stop, close and
drain their data connections to EOF, and the script reports:

- per healthy client, packets the server sent (from its log: the
  connection packet numbers it used) against packets received: they must
  match exactly, with no gap in connection numbers and nothing dropped;
- the server's RSS and open file descriptors at start and end;
- the warnings and errors in the server's log, by kind;
- what the churning and hostile clients saw.

Exit status 0 when every healthy client matched exactly and nothing
unexpected was logged. Sends only to 127.0.0.1; every loop is bounded by
the duration.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import selectors
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.__main__ import ROOT, WORKLOADS, _cpu_seconds, _rss_mib, _start_server, cut_headers, request

# ----------------------------------------------------------------- healthy clients



def _snapshot(pid: int) -> dict[str, Any]:
    """The server's RSS and open files, and the machine's load, right now."""
    return {"rss_mib": _rss_mib(pid), "fds": _fds(pid), "load": os.getloadavg()}

def _healthy_worker(port: int, count: int, seconds: float, queue: Any) -> None:
    """``count`` streaming clients; at the end Stop, close and drain to EOF so every packet is counted."""
    selector = selectors.DefaultSelector()
    states = []
    for _ in range(count):
        control = socket.create_connection(("127.0.0.1", port), timeout=30)
        reply = request(control, "GetDataConnection", "TCP")
        data = socket.create_connection(("127.0.0.1", int(reply.parameter or 0)), timeout=30)
        data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        request(control, "StartDataTransmission")
        data.setblocking(False)
        state: dict[str, Any] = {
            "control": control, "data": data, "buffer": bytearray(), "received": 0, "gaps": 0,
            "id_gaps": 0, "next_number": 0, "last_id": None, "eof": False,
            "local_port": data.getsockname()[1],
        }
        selector.register(data, selectors.EVENT_READ, state)
        states.append(state)

    def read(state: dict[str, Any]) -> None:
        try:
            chunk = state["data"].recv(1 << 20)
        except BlockingIOError:
            return
        if not chunk:
            state["eof"] = True
            selector.unregister(state["data"])
            return
        state["buffer"] += chunk
        for packet_id, number in cut_headers(state["buffer"]):
            state["received"] += 1
            if number != state["next_number"]:
                state["gaps"] += 1
            state["next_number"] = number + 1
            if state["last_id"] is not None and packet_id != state["last_id"] + 1:
                state["id_gaps"] += 1
            state["last_id"] = packet_id

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for key, _ in selector.select(timeout=0.05):
            read(key.data)
    for state in states:  # stop: the server sends nothing more after its OK
        request(state["control"], "StopDataTransmission")
    for state in states:  # closing control makes the server close data (after what is in flight)
        state["control"].close()
    deadline = time.monotonic() + 60
    while any(not s["eof"] for s in states) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.1):
            read(key.data)
    queue.put([
        {k: s[k] for k in ("local_port", "received", "gaps", "id_gaps", "eof")} | {"leftover": len(s["buffer"])}
        for s in states
    ])
    for state in states:
        state["data"].close()


# ----------------------------------------------------------------- churning clients


def _churn_worker(port: int, seconds: float, queue: Any) -> None:
    """One client per second joins, streams for half a second and leaves, four ways in turn."""
    outcomes: Counter[str] = Counter()
    end = time.monotonic() + seconds
    number = 0
    while time.monotonic() < end:
        began = time.monotonic()
        how = number % 4
        number += 1
        try:
            control = socket.create_connection(("127.0.0.1", port), timeout=10)
            try:
                request(control, "GetMetaInfo")  # RuntimeError if the server refused us
                reply = request(control, "GetDataConnection", "TCP")
                data = socket.create_connection(("127.0.0.1", int(reply.parameter or 0)), timeout=10)
                request(control, "StartDataTransmission")
                numbers: list[int] = []
                buffer = bytearray()
                stop = time.monotonic() + 0.5
                while time.monotonic() < stop:
                    data.settimeout(max(0.01, stop - time.monotonic()))
                    try:
                        chunk = data.recv(1 << 16)
                    except TimeoutError:
                        break
                    buffer += chunk
                    numbers.extend(number for _, number in cut_headers(buffer))
                ok = bool(numbers) and numbers == list(range(len(numbers)))
                outcomes["streamed gap-free" if ok else "stream with gaps or empty"] += 1
                if how == 0:
                    request(control, "StopDataTransmission")
                    data.close()
                elif how == 1:
                    data.close()
                elif how == 2:  # vanish: reset both
                    for sock in (data, control):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    data.close()
                else:
                    data.close()
            finally:
                control.close()
        except (OSError, RuntimeError, ValueError) as error:
            outcomes[f"failed: {type(error).__name__}: {error}"[:120]] += 1
        time.sleep(max(0.0, 1.0 - (time.monotonic() - began)))
    queue.put(("churn", dict(outcomes)))


# ----------------------------------------------------------------- the hostile client


def _reply_of(sock: socket.socket, wait: float = 3.0) -> bytes:
    """Everything the server says until it closes or goes quiet."""
    sock.settimeout(wait)
    received = b""
    try:
        while len(received) < 16 << 20:
            chunk = sock.recv(65536)
            if not chunk:
                return received + b"<closed>"
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def _hostile_worker(port: int, seconds: float, queue: Any) -> None:
    """One misbehaving client cycling through every hostile act, one every few seconds."""
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE z [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(b'<!ENTITY a%d "%s">' % (n, b"&a%d;" % (n - 1) * 10 if n > 1 else b"&a;" * 10) for n in range(1, 9))
        + b']><tiaCustomSignalInfo version="1.0">&a8;</tiaCustomSignalInfo>'
    )
    deep = b"<tiaCustomSignalInfo>" + b"<x>" * 20_000 + b"</x>" * 20_000 + b"</tiaCustomSignalInfo>"

    def framed(content: bytes) -> bytes:
        return b"TiA 1.0\nSetCustomSignalInfo\nContent-Length:%d\n\n" % len(content) + content

    acts: list[tuple[str, bytes]] = [
        ("garbage", os.urandom(50_000)),
        ("endless line", b"A" * 500_000),
        ("huge Content-Length", b"TiA 1.0\nSetCustomSignalInfo\nContent-Length:999999999999\n\n"),
        ("negative Content-Length", b"TiA 1.0\nSetCustomSignalInfo\nContent-Length:-1\n\n"),
        ("invalid UTF-8", b"TiA 1.0\n\xff\xfe\xfd\n\n"),
        ("XML bomb", framed(bomb)),
        ("deep XML", framed(deep)),
        ("request flood", b"TiA 1.0\nGetMetaInfo\n\n" * 5000),
        ("newline flood", b"\n" * 2_000_000),
        ("truncated message (then we close)", b"TiA 1.0\nSetCustomSignalInfo\nContent-Length:900\n\n<tia"),
    ]
    outcomes: Counter[str] = Counter()
    idle: list[socket.socket] = []
    slow: list[socket.socket] = []
    end = time.monotonic() + seconds
    step = 0
    while time.monotonic() < end:
        began = time.monotonic()
        kind = step % (len(acts) + 3)
        step += 1
        try:
            if kind < len(acts):
                name, payload = acts[kind]
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    try:
                        sock.sendall(payload)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # closed on us mid-send: the outcome is in what it said
                    said = _reply_of(sock)
                    errors = said.count(b"\nError")
                    validation = said.count(b"\nValidationError")
                    outcome = (f"{errors} Error" if errors else "") + (f"{validation} ValidationError" if validation
                                                                      else "")
                    closed = "closed" if said.endswith(b"<closed>") else "open"
                    if name == "request flood":  # 200 a second: more only to a client reading slowly
                        answered = said.count(b"\nMetaInfo")
                        outcome += f" after {'at most 220' if answered <= 220 else 'more (read slowly)'} replies"
                    outcomes[f"{name}: {outcome or 'no error'}, {closed}"] += 1
            elif kind == len(acts):  # connection flood: 80 connections at once, then gone
                flood = []
                for _ in range(80):
                    try:
                        flood.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                    except OSError:
                        outcomes["connection flood: connect failed"] += 1
                refused = sum(b"too many connections" in _reply_of(s, 0.2) for s in flood[-20:])
                outcomes[f"connection flood: {refused} of the last 20 refused politely"] += 1
                for sock in flood:
                    sock.close()
            elif kind == len(acts) + 1:  # an idle connection, left open (idle_timeout closes it)
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                for sock in list(idle):
                    sock.setblocking(False)
                    try:
                        said = sock.recv(4096)
                    except BlockingIOError:
                        continue  # still open: its idle_timeout has not passed yet
                    except ConnectionResetError:
                        said = b""
                    reply = "with an Error reply" if b"no request for" in said else "without a reply"
                    outcomes[f"idle connection: closed by the server {reply}"] += 1
                    idle.remove(sock)
                    sock.close()
            else:  # a data connection that is never read, dropped after 10 s
                control = socket.create_connection(("127.0.0.1", port), timeout=5)
                data_reply = request(control, "GetDataConnection", "TCP")
                data = socket.socket()
                data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                data.connect(("127.0.0.1", int(data_reply.parameter or 0)))
                request(control, "StartDataTransmission")
                slow.append(control)
                slow.append(data)
                outcomes["non-reading data client started"] += 1
                while len(slow) > 2:
                    slow.pop(0).close()
        except (OSError, RuntimeError, ValueError) as error:
            outcomes[f"failed: {type(error).__name__}: {error}"[:100]] += 1
        time.sleep(max(0.0, 3.0 - (time.monotonic() - began)))
    for sock in idle + slow:
        sock.close()
    queue.put(("hostile", dict(outcomes)))


# ----------------------------------------------------------------- server observation


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


CLOSED = re.compile(
    r"data connection \(TCP\) from 127\.0\.0\.1:(\d+) closed after (\d+) packets \((\d+) dropped\)"
)
LEVEL = re.compile(r"\[([\w.]+)#(warn|error|critical)\] (.*)")


def _read_rotated(path: Path) -> str:
    """The whole log: twistd rotates it every MB into path.1 (newest) .. path.N (oldest)."""
    numbered = [p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()]
    rotated = sorted(numbered, key=lambda p: -int(p.suffix[1:]))
    return "".join(p.read_text(errors="replace") for p in [*rotated, path] if p.exists())


def _log_summary(text: str) -> tuple[Counter[str], dict[int, tuple[int, int]]]:
    """Warnings and errors by kind (numbers masked), and per data port: (packets sent, dropped)."""
    kinds: Counter[str] = Counter()
    for line in text.splitlines():
        match = LEVEL.search(line)
        if match:
            message = re.sub(r"'[^']*'", "'...'", match.group(3))  # quoted peer input varies
            kinds[f"{match.group(2)}: " + re.sub(r"\d+(\.\d+)?", "N", message)[:160]] += 1
        elif "Traceback" in line or "Unhandled" in line:
            kinds["traceback: " + line.strip()[:110]] += 1
    sent = {int(m.group(1)): (int(m.group(2)), int(m.group(3))) for m in CLOSED.finditer(text)}
    return kinds, sent


EXPECTED_WARNINGS = (  # the hostile client's and slow client's doing: logged, rate-limited
    "closing control connection", "refused a control connection", "not keeping up", "caught up after",
    "reactor stalled",  # the clock reports a stall it caught up (CPU contention on a small machine)
)
STALL = re.compile(r"reactor stalled for ([\d.]+) s")


def soak(minutes: float, workload_name: str, workers: int, out: Path | None) -> int:
    workload = WORKLOADS[workload_name]
    seconds = minutes * 60
    context = multiprocessing.get_context("fork")
    queue: Any = context.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        process, port, _ = _start_server(workload, log_path)
        time.sleep(2)
        baseline = _snapshot(process.pid)
        samples: list[tuple[float, float, int]] = []  # (minute, RSS MiB, fds) while everything runs
        try:
            per_worker = [workload.clients // workers + (i < workload.clients % workers) for i in range(workers)]
            healthy = [context.Process(target=_healthy_worker, args=(port, n, seconds, queue)) for n in per_worker if n]
            for proc in healthy:
                proc.start()
            time.sleep(5)  # every healthy client connected and streaming
            start = _snapshot(process.pid)
            cpu0, wall0 = _cpu_seconds(process.pid), time.monotonic()
            others = [
                context.Process(target=_churn_worker, args=(port, seconds - 10, queue)),
                context.Process(target=_hostile_worker, args=(port, seconds - 10, queue)),
            ]
            for proc in others:
                proc.start()
            began = time.monotonic()
            while any(proc.is_alive() for proc in others) and time.monotonic() - began < seconds:
                samples.append(((time.monotonic() - began) / 60, _rss_mib(process.pid), _fds(process.pid)))
                time.sleep(min(60.0, max(1.0, seconds / 30)))
            results: list[dict[str, Any]] = []
            reports: dict[str, dict[str, int]] = {}
            for _ in healthy + others:
                item = queue.get(timeout=seconds + 300)
                if isinstance(item, tuple):
                    reports[item[0]] = item[1]
                else:
                    results.extend(item)
            for proc in healthy + others:
                proc.join(timeout=60)
            time.sleep(1)  # the server logs the closes
            cpu1, wall1 = _cpu_seconds(process.pid), time.monotonic()
            end = _snapshot(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        text = _read_rotated(log_path)
    kinds, sent = _log_summary(text)
    stalls = sorted(float(m.group(1)) for m in STALL.finditer(text))

    mismatched = 0
    rows = []
    for client in sorted(results, key=lambda c: c["local_port"]):
        server_sent, dropped = sent.get(client["local_port"], (-1, -1))
        exact = (
            server_sent == client["received"] and dropped == 0 and client["gaps"] == 0
            and client["id_gaps"] == 0 and client["eof"] and client["leftover"] == 0
        )
        mismatched += not exact
        rows.append({**client, "sent": server_sent, "dropped": dropped, "exact": exact})
    unexpected = {k: v for k, v in kinds.items() if not any(e in k for e in EXPECTED_WARNINGS)}
    cpu = 100.0 * (cpu1 - cpu0) / (wall1 - wall0)

    write = sys.stdout.write
    write(f"soak: {workload.name} ({workload.signal}, {workload.clients} TCP clients) for {minutes:g} min,"
          f" plus 1 churning and 1 hostile client; {os.cpu_count()} CPUs\n")
    write(f"server without clients: RSS {baseline['rss_mib']:.1f} MiB, {baseline['fds']} fds at start;"
          f" RSS {end['rss_mib']:.1f} MiB, {end['fds']} fds at the end (all clients gone)\n")
    write(f"server with all clients: RSS {start['rss_mib']:.1f} MiB, {start['fds']} fds after connecting;"
          f" CPU {cpu:.1f} % of one core; load average {start['load'][0]:.2f} -> {end['load'][0]:.2f}\n")
    if samples:
        write("server while soaking (minute: RSS MiB, fds): "
              + ", ".join(f"{m:.0f}: {r:.1f}, {f}" for m, r, f in samples[:: max(1, len(samples) // 10)]) + "\n")
    if stalls:
        write(f"reactor stalls caught up: {len(stalls)}, median {stalls[len(stalls) // 2]:.3f} s,"
              f" longest {stalls[-1]:.3f} s\n")
    received = [r["received"] for r in rows]
    write(f"healthy clients: {len(rows)}, exact {len(rows) - mismatched}, mismatched {mismatched};"
          f" packets received per client min {min(received, default=0)} max {max(received, default=0)}"
          f" (expected about {seconds * workload.packet_rate:.0f})\n")
    for row in rows:
        if not row["exact"]:
            write(f"  MISMATCH port {row['local_port']}: sent {row['sent']} (dropped {row['dropped']}),"
                  f" received {row['received']}, gaps {row['gaps']}, id gaps {row['id_gaps']}, eof {row['eof']}\n")
    write("server log, warnings and errors by kind:\n")
    for kind, count in kinds.most_common():
        write(f"  {count:7d}  {kind}\n")
    for name in ("churn", "hostile"):
        write(f"{name} client outcomes:\n")
        for what, count in sorted(reports.get(name, {}).items()):
            write(f"  {count:7d}  {what}\n")
    if out is not None:
        out.write_text(json.dumps({
            "workload": workload.name, "minutes": minutes, "cpu_percent": cpu, "baseline": baseline,
            "start": start, "end": end, "samples": samples, "stalls": stalls,
            "clients": rows, "log": dict(kinds), "churn": reports.get("churn"), "hostile": reports.get("hostile"),
        }, indent=2))
        out.with_suffix(".log").write_text(text)
        write(f"saved {out} and the server log {out.with_suffix('.log')}\n")
    leaked = end["fds"] != baseline["fds"]
    if leaked:
        write(f"FD LEAK: {baseline['fds']} fds before any client, {end['fds']} after all left\n")
    ok = mismatched == 0 and len(rows) == workload.clients and not unexpected and not leaked
    write("PASS\n" if ok else f"FAIL (unexpected log entries: {sorted(unexpected)[:5]})\n")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="duration (default 30)")
    parser.add_argument("--workload", "-w", default="W2", choices=sorted(WORKLOADS), help="default W2")
    parser.add_argument("--workers", type=int, default=2, help="processes for the healthy clients")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON report (default: {ROOT / 'bench' / 'results'}/soak-<time>.json)")
    args = parser.parse_args(argv)
    out = args.out or ROOT / "bench" / "results" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    return soak(args.minutes, args.workload, args.workers, out)


if __name__ == "__main__":
    raise SystemExit(main())
