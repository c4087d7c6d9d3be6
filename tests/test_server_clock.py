"""The master clock on a fake clock: exact tick counts, catch-up, never a skipped tick."""

from __future__ import annotations

from fractions import Fraction

from twisted.internet.task import Clock

from tia.server.clock import MasterClock, MonotonicClock


def make(rate: Fraction) -> tuple[MasterClock, Clock, list[int]]:
    ticks: list[int] = []
    fake = Clock()
    clock = MasterClock(rate, lambda first, count: ticks.extend(range(first, first + count)), fake)
    return clock, fake, ticks


def test_first_tick_at_start_then_one_per_interval() -> None:
    clock, fake, ticks = make(Fraction(32))
    clock.start()
    assert ticks == [0]
    for _ in range(31):
        fake.advance(1 / 32)
    assert ticks == list(range(32))


def test_exact_count_over_a_long_run_at_an_inexact_interval() -> None:
    clock, fake, ticks = make(Fraction(1000))
    clock.start()
    for _ in range(60_000):
        fake.advance(0.001)
    # 60 s at 1 kHz: tick 0 at t=0 and one per ms after, give or take the float grid
    assert abs(len(ticks) - 60_001) <= 1
    assert ticks == list(range(len(ticks)))


def test_stall_is_caught_up_in_order_without_skipping() -> None:
    clock, fake, ticks = make(Fraction(100))
    clock.start()
    fake.advance(0.01)
    fake.advance(2.005)  # the reactor was blocked for 2 s (off the grid points: no float ties)
    assert ticks == list(range(len(ticks)))
    assert len(ticks) == 202
    assert clock.late_ticks == 199
    assert clock.longest_catch_up == 199


def test_fractional_packet_rate() -> None:
    clock, fake, ticks = make(Fraction(250, 3))  # 250 Hz, blocksize 3
    clock.start()
    fake.advance(3.0)
    fake.advance(0.0)
    assert ticks[-1] == 250


def test_a_raising_tick_does_not_stop_the_clock() -> None:
    seen: list[int] = []

    def on_tick(first: int, count: int) -> None:
        seen.extend(range(first, first + count))
        if first == 2:
            raise RuntimeError("boom")

    fake = Clock()
    clock = MasterClock(Fraction(10), on_tick, fake)
    clock.start()
    for _ in range(5):
        fake.advance(0.1)
    assert seen == [0, 1, 2, 3, 4, 5]
    assert clock.running


def test_stop() -> None:
    clock, fake, ticks = make(Fraction(10))
    clock.start()
    clock.stop()
    fake.advance(10)
    assert ticks == [0]
    assert not clock.running


def test_monotonic_clock_delegates_scheduling() -> None:
    fake = Clock()
    monotonic = MonotonicClock(fake)
    calls: list[int] = []
    monotonic.callLater(1.0, calls.append, 1)
    assert len(monotonic.getDelayedCalls()) == 1
    fake.advance(1.0)
    assert calls == [1]
    assert monotonic.seconds() > 0


def test_tick_zero_at_start_even_at_a_large_start_time() -> None:
    # at such start times float rounding made LoopingCall's first count 0 (tick 0 missing,
    # every tick one interval late)
    for start in (1000.0, 2.5, 12345.678):
        clock, fake, ticks = make(Fraction(1000))
        fake.advance(start)
        clock.start()
        assert ticks == [0]
        fake.advance(0.0105)
        assert ticks == list(range(11))


def test_a_catch_up_comes_as_one_call_and_single_ticks_one_by_one() -> None:
    calls: list[tuple[int, int]] = []
    fake = Clock()
    clock = MasterClock(Fraction(100), lambda first, count: calls.append((first, count)), fake)
    clock.start()
    fake.advance(0.01)
    assert calls == [(0, 1), (1, 1)]  # on time
    fake.advance(0.035)  # three intervals and a half late: ticks 2, 3, 4 at once
    assert calls == [(0, 1), (1, 1), (2, 3)]
    assert clock.ticks == 5


def test_skip_policy_jumps_over_a_long_stall_and_says_so_in_the_ids() -> None:
    calls: list[tuple[int, int]] = []
    fake = Clock()
    clock = MasterClock(Fraction(100), lambda first, count: calls.append((first, count)), fake, "skip")
    clock.start()
    fake.advance(0.01)
    fake.advance(2.005)  # 200 intervals late
    assert calls[-1] == (201, 1)
    assert clock.skipped_ticks == 199
    fake.advance(0.0035)  # short lateness is still caught up
    fake.advance(0.01)
    assert calls[-1][0] + calls[-1][1] == clock.ticks
