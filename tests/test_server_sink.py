"""QueueSink (tia.server.sink): the reactor side appends and wakes nobody; the worker wakes per interval.

A sink at 1 kHz must not cost a thread hand-off per tick: below half its
capacity ``deliver`` leaves the worker asleep until its ``wake_seconds``
schedule; at half, it wakes it, so sleeping never overflows the buffer. What
does not fit is dropped, counted and logged; ``stop()`` handles everything
buffered, in order, before ``closing``. The worker runs for real; the tests
wait for what it does (threading events, the Deferred of ``stop()``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from support import LogCapture
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tia.server.sink import MIN_CAPACITY, QueueSink
from tia.server.tick import Tick

WAIT = 10.0  # seconds: a bound for a loaded machine, never reached when things work
BLOCK = np.zeros((2, 4), np.float32)


def tick(packet_id: int) -> Tick:
    return Tick.from_blocks(packet_id, packet_id * 1000, [(0x1, BLOCK)])


def tick_run(first: int, count: int) -> list[Tick]:
    return [tick(n) for n in range(first, first + count)]


class Recorded(QueueSink):
    """Records what its worker was given; ``handled_enough`` is set at ``expect`` ticks."""

    def __init__(self, wake_seconds: float, capacity: int = MIN_CAPACITY, expect: int = 0) -> None:
        super().__init__("test", capacity, reactor)
        self.wake_seconds = wake_seconds
        self.steps: list[object] = []
        self.expect = expect
        self.handled_enough = threading.Event()
        self.periodic_ran = threading.Event()
        self.gate: threading.Event | None = None
        self.in_handle = threading.Event()

    def opened(self) -> None:
        self.steps.append("opened")

    def handle(self, tick: Tick) -> None:
        self.in_handle.set()
        if self.gate is not None:
            self.gate.wait(WAIT)
        if tick.packet_id < 0:
            raise ValueError("a bad tick")
        self.steps.append(tick.packet_id)
        if len(self.ids()) >= self.expect:
            self.handled_enough.set()

    def periodic(self) -> None:
        self.steps.append("periodic")
        self.periodic_ran.set()

    def closing(self) -> None:
        self.steps.append("closing")

    def ids(self) -> list[int]:
        return [step for step in self.steps if isinstance(step, int)]

    def deliver_each(self, ticks: Sequence[Tick]) -> None:
        for one in ticks:
            self.deliver([one])


class QueueSinkTests(unittest.TestCase):
    timeout = 30

    def started(self, sink: Recorded) -> Recorded:
        sink.start()
        self.addCleanup(sink.stop)
        return sink

    def test_below_half_the_capacity_nobody_is_woken_at_half_the_worker_is(self) -> None:
        sink = self.started(Recorded(wake_seconds=3600, expect=MIN_CAPACITY // 2))
        half = MIN_CAPACITY // 2
        sink.deliver_each(tick_run(0, half - 1))
        self.assertFalse(sink._wakeup.is_set())  # the reactor side signalled nothing
        self.assertEqual(sink.buffered, half - 1)
        sink.deliver([tick(half - 1)])
        self.assertTrue(sink.handled_enough.wait(WAIT))
        self.assertEqual(sink.ids(), list(range(half)))
        self.assertEqual(sink.wakeups, 1)  # one round for all of them
        self.assertEqual(sink.dropped, 0)

    def test_the_schedule_wakes_the_worker_for_what_came_meanwhile(self) -> None:
        sink = self.started(Recorded(wake_seconds=0.05, expect=3))
        sink.deliver(tick_run(0, 3))
        self.assertTrue(sink.handled_enough.wait(WAIT))
        self.assertTrue(sink.periodic_ran.wait(WAIT))
        self.assertEqual(sink.ids(), [0, 1, 2])
        self.assertEqual(sink.steps[0], "opened")

    @inlineCallbacks
    def test_stop_handles_everything_buffered_in_order_then_closes(self) -> Any:
        sink = Recorded(wake_seconds=3600)
        sink.start()
        sink.deliver(tick_run(0, 5))  # below half: the worker sleeps on
        sink.deliver_each(tick_run(5, 2))
        yield sink.stop()
        self.assertTrue(sink.finished)
        self.assertEqual(sink.steps, ["opened", 0, 1, 2, 3, 4, 5, 6, "closing"])
        yield sink.stop()  # again: fires at once

    @inlineCallbacks
    def test_overflow_is_dropped_counted_logged_and_never_blocks(self) -> Any:
        log = LogCapture(self)
        sink = Recorded(wake_seconds=3600)
        sink.gate = threading.Event()
        sink.start()
        half = MIN_CAPACITY // 2
        sink.deliver(tick_run(0, half))  # wakes the worker, which takes tick 0 and waits at the gate
        self.assertTrue(sink.in_handle.wait(WAIT))
        sink.deliver_each(tick_run(half, 30))  # never blocks: what does not fit is dropped
        fits = MIN_CAPACITY - (half - 1)
        self.assertEqual(sink.dropped, 30 - fits)
        self.assertEqual(sink.buffered, MIN_CAPACITY)
        warnings = log.find("warn", "queue full")
        self.assertEqual(len(warnings), 1, log.lines)  # rate-limited: one line for the lot
        self.assertIn(f"queue full ({MIN_CAPACITY} packets), dropped 1 packets", warnings[0])
        sink.gate.set()
        yield sink.stop()
        self.assertEqual(sink.ids(), list(range(half + fits)))
        self.assertEqual(sink.steps[-1], "closing")

    @inlineCallbacks
    def test_an_error_in_a_step_is_logged_and_the_next_ticks_go_on(self) -> Any:
        log = LogCapture(self)
        sink = Recorded(wake_seconds=3600)
        sink.start()
        sink.deliver([tick(0), tick(-1), tick(2)])
        yield sink.stop()
        self.assertEqual(sink.ids(), [0, 2])
        self.assertEqual(len(log.find("critical", "test: unexpected error in handle")), 1, log.lines)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
