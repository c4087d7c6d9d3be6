"""Master-clock precision: ``python -m bench.clock_jitter [--rate HZ] [--seconds N]``.

Runs ``LoopingCall.withCount`` (the master clock) at the packet rate on the
real reactor, first with ``MonotonicClock`` (the reactor's own timers, whose
``epoll_wait`` timeout has 1 ms granularity), then with ``PreciseClock``
(timerfd), and prints per clock: calls, ticks caught up by count, how late
each call ran after its grid point (p50/p99/max) and the CPU time used as a
percentage of one core. A last row, "timerfd floor", waits on a bare timerfd
in a plain epoll loop: the wake-up latency of the machine itself, which no
event-loop clock can beat without busy-waiting. Nothing else runs in the
process, so this is the clock alone; ``python -m bench`` measures the whole
server.
"""

from __future__ import annotations

import argparse
import gc
import select
import sys
import time
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFDSet, IReactorTime
from twisted.internet.task import LoopingCall

from tia.server.clock import MonotonicClock
from tia.server.precise_clock import PreciseClock, Timerfd


@dataclass(frozen=True)
class Result:
    clock: str
    calls: int
    caught_up: int  # grid ticks delivered by a count > 1 rather than by a call of their own (late > 1 interval)
    late_p50_ms: float
    late_p99_ms: float
    late_max_ms: float
    cpu_percent: float


@defer.inlineCallbacks
def measure(reactor: Any, name: str, clock: IReactorTime, rate: float, seconds: float) -> Any:
    """Lateness of every call: monotonic now - the grid point it was scheduled for.

    A call that is more than an interval late also delivers the ticks that
    came due meanwhile (count > 1); it was scheduled for the oldest of them.
    """
    interval = 1.0 / rate
    lateness: list[float] = []
    ticks = 0
    skipped = 0

    def on_call(count: int) -> None:
        nonlocal ticks
        now = time.monotonic()
        assert loop.starttime is not None
        lateness.append(now - (loop.starttime + (ticks + skipped) * interval))  # its oldest tick's grid point
        ticks += count

    loop = LoopingCall.withCount(on_call)
    loop.clock = clock
    gc.collect()
    cpu0, wall0 = time.process_time(), time.monotonic()
    done = loop.start(interval, now=True)
    # withCount's first call computes int((start - interval - start) / interval); when float
    # rounding makes that -0.99.. it counts 0 and grid point 0 is never delivered: tick n
    # then belongs to grid point n + 1.
    skipped = 0 if lateness else 1
    yield task.deferLater(reactor, seconds, lambda: None)
    loop.stop()
    yield done
    cpu1, wall1 = time.process_time(), time.monotonic()
    late = np.asarray(lateness[1 - skipped :]) * 1e3  # a call from start() itself is on time by definition
    return Result(
        name, len(lateness), ticks - len(lateness),
        float(np.percentile(late, 50)), float(np.percentile(late, 99)), float(late.max()),
        100.0 * (cpu1 - cpu0) / (wall1 - wall0),
    )


def floor(rate: float, seconds: float) -> Result | None:
    """The platform's own wake-up latency: one timerfd in a bare epoll loop, no Twisted, no Python callbacks."""
    try:
        timer = Timerfd()
    except OSError:
        return None
    interval_ns = round(1e9 / rate)
    poller = select.epoll()
    poller.register(timer.fd, select.EPOLLIN)
    lateness: list[int] = []
    try:
        cpu0, wall0 = time.process_time(), time.monotonic()
        start = time.monotonic_ns()
        for k in range(1, int(seconds * rate) + 1):
            deadline = start + k * interval_ns
            timer.arm(deadline)
            poller.poll()
            lateness.append(time.monotonic_ns() - deadline)
            timer.drain()
        cpu1, wall1 = time.process_time(), time.monotonic()
    finally:
        poller.close()
        timer.close()
    late = np.asarray(lateness) / 1e6
    return Result(
        "timerfd floor", len(lateness), 0,
        float(np.percentile(late, 50)), float(np.percentile(late, 99)), float(late.max()),
        100.0 * (cpu1 - cpu0) / (wall1 - wall0),
    )


def print_table(results: list[Result], rate: float, seconds: float) -> None:
    header = (
        f"{'clock':15} {'calls':>7} {'caught up':>9} {'late p50':>9} {'late p99':>9} {'late max':>9} {'CPU %':>6}"
    )
    sys.stdout.write(f"LoopingCall.withCount at {rate:g} Hz for {seconds:g} s\n{header}\n{'-' * len(header)}\n")
    for r in results:
        sys.stdout.write(
            f"{r.clock:15} {r.calls:7d} {r.caught_up:9d} {r.late_p50_ms:8.3f}m {r.late_p99_ms:8.3f}m "
            f"{r.late_max_ms:8.3f}m {r.cpu_percent:6.2f}\n"
        )


@defer.inlineCallbacks
def run(reactor: Any, rate: float, seconds: float) -> Any:
    results = [(yield measure(reactor, "MonotonicClock", MonotonicClock(reactor), rate, seconds))]
    if PreciseClock.available(reactor):
        precise = PreciseClock(reactor)
        try:
            results.append((yield measure(reactor, "PreciseClock", precise, rate, seconds)))
        finally:
            precise.close()
    else:
        sys.stdout.write("PreciseClock is not available here (needs Linux timerfd)\n")
    bare = floor(rate, seconds)  # blocks the reactor, which has nothing else to do
    if bare is not None:
        results.append(bare)
    print_table(results, rate, seconds)


def main(argv: list[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(prog="python -m bench.clock_jitter", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="ticks per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per clock")
    args = parser.parse_args(argv)

    def go(reactor: IReactorFDSet) -> Deferred[None]:
        d: Deferred[None] = run(reactor, args.rate, args.seconds)
        return d

    task.react(go)  # exits with the run's outcome


if __name__ == "__main__":
    main()
