"""What a threaded sink costs at 1 kHz: ``python -m bench.sinks [--sinks none recording lsl] [--seconds 10]``.

Each case runs the daemon (``tia.daemon.build_service``) in a child process
of its own on the real reactor: one 8-channel EEG signal at 1000 Hz in blocks
of 1 (1000 ticks a second), no network client, and either no sink, the
server's recording ([recording] enabled, formats = raw, the default
flush_interval of 1 s) or the LSL outlets ([lsl] outlets = on). After a
second of warm-up it measures for ``--seconds``:

- ticks/s: the hub's ticks, to show the load was the same;
- wake-ups/s: the sink's worker thread's context switches
  (``/proc/self/task/TID/status``: voluntary + involuntary), i.e. how often
  the kernel scheduled it, whatever the sink's code does;
- worker CPU and process CPU, in % of one core (``/proc/self/task/TID/stat``
  and ``os.times``). Process CPU includes the reactor thread, the clock and
  any thread the sink's library starts (liblsl's).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CASES = ("none", "recording", "lsl")
WORKER_THREADS = {"recording": "tia-recording", "lsl": "tia-lsl"}
WARM_UP = 1.0

INI = """
[server]
control = tcp:0:interface=127.0.0.1

[source:eeg]
driver = sine
rate = 1000
blocksize = 1
channels = 8
type = eeg
"""


def _config_text(case: str, directory: str) -> str:
    if case == "recording":
        return INI + f"\n[recording]\nenabled = on\nformats = raw\ndirectory = {directory}\n"
    if case == "lsl":
        return INI + "\n[lsl]\noutlets = on\nname = bench\nsource_id = bench-sinks\n"
    return INI


def _thread_counters(native_id: int | None) -> tuple[int, float]:
    """(context switches, CPU seconds) of one thread of this process; (0, 0.0) without one."""
    if native_id is None:
        return 0, 0.0
    task = Path(f"/proc/self/task/{native_id}")
    switches = 0
    for line in (task / "status").read_text().splitlines():
        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
            switches += int(line.split()[1])
    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return switches, ticks / os.sysconf("SC_CLK_TCK")


def _process_cpu() -> float:
    times = os.times()
    return times.user + times.system


def run_case(case: str, seconds: float) -> dict[str, Any]:
    """In this process: run the daemon with ``case``'s sink for warm-up + ``seconds``; the figures."""
    import configparser

    from twisted.internet import reactor

    from tia.config import parse_config
    from tia.daemon import build_service

    with tempfile.TemporaryDirectory(prefix="tia-bench-sinks-") as directory:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_string(_config_text(case, directory))
        service = build_service(parse_config(parser, "bench"), reactor, warn_exposure=False)
        result: dict[str, Any] = {"case": case}
        start: dict[str, Any] = {}

        def worker_id() -> int | None:
            name = WORKER_THREADS.get(case)
            return next((t.native_id for t in threading.enumerate() if t.name == name), None)

        def begin() -> None:
            start.update(ticks=service.hub.ticks_sent, cpu=_process_cpu(), at=time.monotonic(), worker=worker_id())
            start["switches"], start["worker_cpu"] = _thread_counters(start["worker"])

        def end() -> None:
            elapsed = time.monotonic() - start["at"]
            switches, worker_cpu = _thread_counters(start["worker"])
            result.update(
                ticks_per_second=(service.hub.ticks_sent - start["ticks"]) / elapsed,
                wakeups_per_second=(switches - start["switches"]) / elapsed,
                worker_cpu_percent=100 * (worker_cpu - start["worker_cpu"]) / elapsed,
                process_cpu_percent=100 * (_process_cpu() - start["cpu"]) / elapsed,
            )
            service.stopService().addBoth(lambda _: reactor.stop())

        service.startService()
        reactor.callLater(WARM_UP, begin)
        reactor.callLater(WARM_UP + seconds, end)
        reactor.run()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sinks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sinks", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        sys.stdout.write(json.dumps(run_case(args.child, args.seconds)) + "\n")
        return 0
    sys.stdout.write(f"{'sink':<10} {'ticks/s':>8} {'wake-ups/s':>11} {'worker CPU %':>13} {'process CPU %':>14}\n")
    for case in args.sinks:
        child = subprocess.run(
            [sys.executable, "-m", "bench.sinks", "--child", case, "--seconds", str(args.seconds)],
            cwd=ROOT, capture_output=True, text=True, check=False,
        )
        if child.returncode != 0:
            last = (child.stderr.strip().splitlines() or ["no output"])[-1]
            sys.stdout.write(f"{case:<10} failed: {last}\n")
            continue
        row = json.loads(child.stdout.strip().splitlines()[-1])
        sys.stdout.write(
            f"{case:<10} {row['ticks_per_second']:>8.1f} {row['wakeups_per_second']:>11.1f} "
            f"{row['worker_cpu_percent']:>13.2f} {row['process_cpu_percent']:>14.2f}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
