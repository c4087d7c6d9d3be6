"""The master clock: a fixed grid of ticks at the packet rate, never skipping one.

``LoopingCall.withCount`` tells how many grid intervals passed since the last
call; after a stalled reactor we produce every missed tick (count > 1) in
order, so the long-term packet rate is exact and no sample is lost. The grid
runs on a monotonic clock, so a wall-clock step cannot burst or stall it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger()

STALL_WARNING_SECONDS = 0.1


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


class MasterClock:
    """Calls ``on_tick(n)`` for n = 0, 1, 2, ... at ``packet_rate`` ticks per second."""

    def __init__(
        self, packet_rate: Fraction, on_tick: Callable[[int], None], clock: IReactorTime
    ) -> None:
        self.packet_rate = packet_rate
        self.interval = float(1 / packet_rate)
        self._on_tick = on_tick
        self.ticks = 0
        self.late_ticks = 0
        self.longest_catch_up = 0
        self._loop = LoopingCall.withCount(self._advance)
        self._loop.clock = clock

    @property
    def running(self) -> bool:
        return self._loop.running

    def start(self) -> None:
        self._loop.start(self.interval, now=True).addErrback(self._loop_died)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _advance(self, count: int) -> None:
        if count > 1:
            self.late_ticks += count - 1
            self.longest_catch_up = max(self.longest_catch_up, count - 1)
            if (count - 1) * self.interval >= STALL_WARNING_SECONDS:
                log.warn(
                    "reactor stalled for {seconds:.3f} s; catching up {count} ticks",
                    seconds=(count - 1) * self.interval, count=count - 1,
                )
        for _ in range(count):
            tick = self.ticks
            self.ticks += 1
            try:
                self._on_tick(tick)
            except Exception:
                log.failure("tick {tick} failed; the clock goes on", tick=tick)

    def _loop_died(self, failure: Failure) -> None:
        log.failure("the master clock stopped unexpectedly", failure=failure)

