"""PreciseClock on the real reactor: heap order, cancel/reset, failures, fd lifetime, a 1 kHz grid.

Timing is only checked within generous bounds (a busy CI machine must not
fail these); the precision itself is measured by ``python -m bench.clock_jitter``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from support import ramp_config, sleep, until
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorFDSet
from twisted.internet.task import LoopingCall
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial import unittest

from tia.daemon import build_service
from tia.server.clock import MonotonicClock, best_clock
from tia.server.precise_clock import PreciseClock

SKIP = None if PreciseClock.available(reactor) else f"PreciseClock needs a Linux timerfd (this is {sys.platform})"


def precise_readers() -> list[object]:
    return [reader for reader in reactor.getReaders() if isinstance(reader, PreciseClock)]


class WakeUpRecordingClock(PreciseClock):
    """A PreciseClock noting the time of each of its wake-ups."""

    def __init__(self, reactor: IReactorFDSet) -> None:
        super().__init__(reactor)
        self.wake_ups: list[float] = []

    def doRead(self) -> None:
        self.wake_ups.append(time.monotonic())
        super().doRead()


class PreciseClockTests(unittest.TestCase):
    skip = SKIP
    timeout = 20

    def setUp(self) -> None:
        self.clock = PreciseClock(reactor)
        self.addCleanup(self.clock.close)
        self.fired: list[tuple[str, float]] = []

    def record(self, name: str) -> Callable[[], None]:
        return lambda: self.fired.append((name, self.clock.seconds()))

    def names(self) -> list[str]:
        return [name for name, _ in self.fired]

    def after(self, delay: float) -> Deferred[None]:
        """A sentinel on the clock under test: calls run in deadline order, so no race with a stalled machine."""
        done: Deferred[None] = Deferred()
        self.clock.callLater(delay, done.callback, None)
        return done

    @inlineCallbacks
    def test_calls_fire_in_deadline_order_never_early(self) -> Any:
        done: Deferred[None] = Deferred()
        scheduled = {}
        for name, delay in (("c", 0.030), ("a", 0.010), ("b", 0.020), ("d", 0.0)):
            scheduled[name] = self.clock.callLater(delay, self.record(name)).getTime()
        self.clock.callLater(0.040, done.callback, None)
        yield done
        self.assertEqual(self.names(), ["d", "a", "b", "c"])
        for name, when in self.fired:
            self.assertGreaterEqual(when, scheduled[name])  # the timerfd agrees with seconds()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_arguments_are_passed(self) -> Any:
        done: Deferred[tuple[object, ...]] = Deferred()
        self.clock.callLater(0.001, lambda *a, **kw: done.callback((a, kw)), 1, 2, key="value")
        done.addCallback(self.assertEqual, ((1, 2), {"key": "value"}))
        return done

    @inlineCallbacks
    def test_cancel(self) -> Any:
        first = self.clock.callLater(0.010, self.record("first"))
        second = self.clock.callLater(0.020, self.record("second"))
        third = self.clock.callLater(0.030, self.record("third"))
        first.cancel()  # the armed deadline: the timer must move on to the next one
        third.cancel()
        self.assertFalse(first.active())
        self.assertEqual(self.clock.getDelayedCalls(), [second])
        yield self.after(0.040)
        self.assertEqual(self.names(), ["second"])

    @inlineCallbacks
    def test_cancel_everything_then_schedule_again(self) -> Any:
        self.clock.callLater(0.005, self.record("gone")).cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        yield sleep(0.03)  # the quiet time under test: disarmed, nothing may fire
        self.clock.callLater(0.005, self.record("later"))
        yield self.after(0.010)
        self.assertEqual(self.names(), ["later"])

    @inlineCallbacks
    def test_reset_earlier_and_later(self) -> Any:
        early = self.clock.callLater(10.0, self.record("early"))
        late = self.clock.callLater(0.005, self.record("late"))
        early.reset(0.010)
        late.reset(0.060)
        self.assertLess(abs(late.getTime() - self.clock.seconds() - 0.060), 0.02)
        yield self.after(0.035)
        self.assertEqual(self.names(), ["early"])
        self.assertEqual(self.clock.getDelayedCalls(), [late])
        yield self.after(0.100)
        self.assertEqual(self.names(), ["early", "late"])
        _, when = self.fired[1]
        self.assertGreaterEqual(when, late.getTime())

    @inlineCallbacks
    def test_delay(self) -> Any:
        call = self.clock.callLater(0.040, self.record("moved"))
        call.delay(-0.030)  # earlier
        yield self.after(0.025)
        self.assertEqual(self.names(), ["moved"])

    def test_get_delayed_calls_lists_the_pending_ones(self) -> None:
        calls = [self.clock.callLater(delay, lambda: None) for delay in (5.0, 1.0, 3.0)]
        pending = self.clock.getDelayedCalls()
        self.assertEqual(sorted(pending, key=id), sorted(calls, key=id))
        self.assertTrue(all(call.active() for call in pending))
        calls[1].cancel()
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)

    @inlineCallbacks
    def test_a_raising_call_does_not_stop_later_ones(self) -> Any:
        def boom() -> None:
            raise ZeroDivisionError("boom")

        self.clock.callLater(0.005, boom)
        self.clock.callLater(0.005, self.record("right after"))
        self.clock.callLater(0.020, self.record("later"))
        yield self.after(0.030)
        self.assertEqual(self.names(), ["right after", "later"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(precise_readers(), [self.clock])  # still registered with the reactor

    @inlineCallbacks
    def test_calls_scheduled_while_running_wait_for_a_later_pass(self) -> Any:
        def reschedule() -> None:
            self.fired.append(("outer", self.clock.seconds()))
            self.clock.callLater(0, self.record("inner"))

        self.clock.callLater(0.005, reschedule)
        yield self.after(0.050)
        self.assertEqual(self.names(), ["outer", "inner"])

    def test_reader_only_while_in_use_and_close_removes_it(self) -> None:
        self.assertEqual(precise_readers(), [])  # lazily opened: an unused clock holds no fd
        self.assertEqual(self.clock.fileno(), -1)
        self.clock.callLater(1.0, lambda: None)
        self.assertEqual(precise_readers(), [self.clock])
        self.assertGreaterEqual(self.clock.fileno(), 0)
        self.clock.close()
        self.assertEqual(precise_readers(), [])
        self.assertEqual(self.clock.fileno(), -1)
        self.clock.close()  # idempotent

    @inlineCallbacks
    def test_reopens_after_close_and_pending_calls_survive(self) -> Any:
        self.clock.callLater(0.005, self.record("kept"))
        self.clock.close()
        yield sleep(0.02)  # the quiet time under test: closed, nothing can fire
        self.assertEqual(self.names(), [])
        self.clock.callLater(0.005, self.record("new"))
        yield self.after(0.010)
        self.assertEqual(self.names(), ["kept", "new"])

    def test_connection_lost_releases_the_timer(self) -> None:
        self.clock.callLater(1.0, lambda: None)
        self.clock.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(precise_readers(), [])
        self.assertEqual(self.clock.fileno(), -1)

    @inlineCallbacks
    def test_looping_call_with_count_at_1khz(self) -> Any:
        counts: list[int] = []
        loop = LoopingCall.withCount(counts.append)
        loop.clock = self.clock
        started = time.monotonic()
        stopped = loop.start(0.001, now=True)
        yield self.after(0.3)  # on the same clock: every tick due before it has been delivered
        loop.stop()
        elapsed = time.monotonic() - started
        yield stopped
        expected = elapsed * 1000 + 1  # grid points passed, the one at start included
        self.assertLessEqual(sum(counts), expected + 2)
        self.assertGreaterEqual(sum(counts), 0.8 * expected - 2)  # missed ticks are caught up by count
        self.assertGreater(len(counts), 50)  # it really ticked, not one huge catch-up
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @inlineCallbacks
    def test_a_grid_of_ticks_keeps_a_periodic_timer_and_stopping_leaves_no_wake_ups(self) -> Any:
        self.clock = WakeUpRecordingClock(reactor)
        self.addCleanup(self.clock.close)
        wake_ups = self.clock.wake_ups
        arms: list[tuple[int, int]] = []
        counts: list[int] = []
        loop = LoopingCall.withCount(counts.append)
        loop.clock = self.clock
        loop.start(0.001, now=False)
        timer: Any = self.clock._timer
        real_arm = timer.arm

        def arm(deadline: int, period: int = 0) -> None:
            arms.append((deadline, period))
            real_arm(deadline, period)

        timer.arm = arm
        # the time under test, on the reactor's own timer: the clock under test must fall silent after
        yield sleep(0.3)
        ticks = sum(counts)
        self.assertGreater(ticks, 50)
        # the kernel re-arms the grid by itself: only a late (caught-up) tick needs a new setting
        self.assertLess(len(arms), ticks / 2, f"{len(arms)} settings for {ticks} ticks")
        if arms:  # the period is estimated from the deadlines seen: close to the grid's by now
            self.assertLess(abs(arms[-1][1] - 1_000_000), 10_000, arms)
        loop.stop()
        stopped = len(wake_ups)
        yield sleep(0.05)  # the quiet time under test: stopped, no more wake-ups
        self.assertLessEqual(len(wake_ups) - stopped, 1)  # at most the expiry already under way
        self.assertIsNone(self.clock._armed_ns)  # disarmed: nothing pending
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @inlineCallbacks
    def test_an_earlier_call_between_ticks_fires_on_time_and_the_grid_goes_on(self) -> Any:
        counts: list[int] = []
        loop = LoopingCall.withCount(counts.append)
        loop.clock = self.clock
        loop.start(0.002, now=False)
        yield self.after(0.05)
        scheduled = self.clock.callLater(0.0005, self.record("between")).getTime()
        yield self.after(0.05)
        loop.stop()
        self.assertEqual(self.names(), ["between"])
        self.assertGreaterEqual(self.fired[0][1], scheduled)  # never early
        self.assertGreater(sum(counts), 30)


class BestClockTests(unittest.TestCase):
    def test_fake_reactors_get_the_monotonic_clock(self) -> None:
        self.assertIsInstance(best_clock(task.Clock()), MonotonicClock)
        self.assertIsInstance(best_clock(MemoryReactorClock()), MonotonicClock)

    def test_real_reactor_gets_the_precise_clock(self) -> None:
        clock = best_clock(reactor)
        self.assertIsInstance(clock, PreciseClock)
        self.assertEqual(precise_readers(), [])  # nothing opened until used

    test_real_reactor_gets_the_precise_clock.skip = SKIP  # type: ignore[attr-defined]  # trial reads it


class ServiceReleasesTheClockTests(unittest.TestCase):
    skip = SKIP
    timeout = 20

    @inlineCallbacks
    def test_stop_service_closes_the_timerfd(self) -> Any:
        service = build_service(ramp_config(rate=1000, blocksize=10, udp_mode="off"))
        service.startService()
        try:
            self.assertEqual(len(precise_readers()), 1)
            yield until(lambda: service.clock.ticks > 0)  # ticking on the timerfd
        finally:
            yield service.stopService()
        self.assertEqual(precise_readers(), [])
