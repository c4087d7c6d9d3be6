"""The master clock: a fixed grid of ticks at the packet rate.

``LoopingCall.withCount`` tells how many grid intervals passed since the last
call; after a stalled reactor we produce every missed tick (count > 1) in
order, so the long-term packet rate is exact and no sample is lost (unless
``stall_policy = skip`` asks to jump over a long stall: the packet ids jump
with it, so every client sees it). The grid
runs on a monotonic clock, so a wall-clock step cannot burst or stall it.

The reactor's own timers wait in ``epoll_wait``, whose timeout has 1 ms
granularity, so a 1 kHz grid fires up to a millisecond late. ``best_clock``
picks ``tia.server.precise_clock.PreciseClock`` (a Linux timerfd under the
reactor) where it works and ``MonotonicClock`` elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, cast

from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tia.server.precise_clock import PreciseClock

log = Logger()

STALL_WARNING_SECONDS = 0.1  # a longer stall is logged, and skipped under stall_policy = skip
STALL_POLICIES = ("catch-up", "skip")


@implementer(IReactorTime)
class MonotonicClock:
    """An ``IReactorTime`` whose ``seconds()`` is ``time.monotonic()``.

    Delays are relative, so scheduling still goes through the reactor; only
    the grid arithmetic of ``LoopingCall`` sees monotonic time.
    """

    def __init__(self, reactor: IReactorTime) -> None:
        self._reactor = reactor

    def seconds(self) -> float:
        return time.monotonic()

    def callLater(self, delay: float, callable: Callable[..., Any], *args: object, **kw: object) -> IDelayedCall:
        return self._reactor.callLater(delay, callable, *args, **kw)

    def getDelayedCalls(self) -> Sequence[IDelayedCall]:
        return self._reactor.getDelayedCalls()


def best_clock(reactor: IReactorTime) -> IReactorTime:
    """``PreciseClock`` where it works (Linux, a real reactor), else ``MonotonicClock``."""
    if PreciseClock.available(reactor):
        return PreciseClock(cast(IReactorFDSet, reactor))
    log.info("master clock on the reactor's timers (millisecond resolution): no usable timerfd here")
    return MonotonicClock(reactor)


class MasterClock:
    """Calls ``on_ticks(first, count)`` for ticks 0, 1, 2, ... at ``packet_rate`` ticks per second.

    ``count`` is 1 but after a stalled reactor, when every missed tick comes at
    once (catch-up), or the grid jumps over them (``stall_policy = skip``).
    """

    def __init__(
        self, packet_rate: Fraction, on_ticks: Callable[[int, int], None], clock: IReactorTime,
        stall_policy: str = "catch-up",
    ) -> None:
        if stall_policy not in STALL_POLICIES:
            raise ValueError(f"stall_policy {stall_policy!r} is not one of {', '.join(STALL_POLICIES)}")
        self.packet_rate = packet_rate
        self.interval = float(1 / packet_rate)
        self._on_ticks = on_ticks
        self.stall_policy = stall_policy
        self.ticks = 0
        self.late_ticks = 0
        self.longest_catch_up = 0
        self.skipped_ticks = 0  # stall_policy = skip: ticks never produced (packet ids jump over them)
        self._loop = LoopingCall.withCount(self._advance)
        self._loop.clock = clock

    @property
    def running(self) -> bool:
        return self._loop.running

    def start(self) -> None:
        # Tick 0 goes out now, by hand: with now=True, LoopingCall.withCount computes the
        # first count as int(-interval / interval), which float rounding at a large
        # monotonic start time can make 0, and then every tick would be an interval late.
        self._advance(1)
        self._loop.start(self.interval, now=False).addErrback(self._loop_died)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _advance(self, count: int) -> None:
        if count > 1:
            missed = count - 1
            stalled = missed * self.interval >= STALL_WARNING_SECONDS
            if stalled and self.stall_policy == "skip":
                # Live feedback over completeness: jump the grid to now. Packet ids and
                # timestamps jump too, so every client sees the discontinuity; nothing is
                # sent twice. Short lateness (below the threshold) is always caught up.
                log.warn(
                    "reactor stalled for {seconds:.3f} s; skipping {count} ticks, packet ids jump from "
                    "{last} to {next} (stall_policy = skip)",
                    seconds=missed * self.interval, count=missed, last=self.ticks - 1, next=self.ticks + missed,
                )
                self.ticks += missed
                self.skipped_ticks += missed
                count = 1
            else:
                self.late_ticks += missed
                self.longest_catch_up = max(self.longest_catch_up, missed)
                if stalled:
                    log.warn(
                        "reactor stalled for {seconds:.3f} s; catching up {count} ticks",
                        seconds=missed * self.interval, count=missed,
                    )
        first = self.ticks
        self.ticks += count
        try:
            self._on_ticks(first, count)
        except Exception:
            log.failure("ticks {first}..{last} failed; the clock goes on", first=first, last=first + count - 1)

    def _loop_died(self, failure: Failure) -> None:
        log.failure("the master clock stopped unexpectedly", failure=failure)
