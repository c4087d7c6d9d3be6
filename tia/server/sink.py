"""A hub subscriber whose work runs in a thread of its own: :class:`QueueSink`, for disks and outlets.

Writing a recording or pushing LSL outlets must never delay the clock or the
network clients, so a sink's ``deliver`` (on the reactor thread) only
appends the ticks (immutable: nothing to copy, nothing a source could change
later) to a bounded buffer, and wakes nobody. Its worker thread wakes on a
fixed schedule, every ``wake_seconds``, and handles everything buffered
meanwhile: one thread hand-off per interval rather than one per tick (a
thousand a second at 1 kHz, each a switch of the GIL between the reactor and
the worker). When the buffer passes half its capacity the reactor side
wakes the worker early, so a worker never overflows it merely by sleeping;
only one that cannot keep up does: the ticks that do not fit are dropped,
counted in ``dropped`` and logged at most once per ``DROP_LOG_INTERVAL``.
At ``stop()`` everything buffered is handled before ``closing``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from tia.server.tick import Tick

__all__ = ["DROP_LOG_INTERVAL", "MIN_CAPACITY", "QueueSink"]

log = Logger()

DROP_LOG_INTERVAL = 10.0  # seconds between two overflow warnings of one sink
MIN_CAPACITY = 16  # ticks
WAKE_FRACTION = 0.5  # of the capacity: the reactor side wakes the worker when the buffer holds this much


class QueueSink:
    """A hub subscriber whose work runs in its own thread, behind a bounded buffer.

    Subclasses implement ``opened`` (first thing in the thread), ``handle``
    (one tick, in order), ``periodic`` (every ``wake_seconds``, after the
    ticks that came meanwhile) and ``closing`` (after the last tick); an
    exception in any of them is logged, not fatal. ``deliver`` never blocks.
    ``wakeups`` counts the worker's rounds (for measurements).
    """

    wake_seconds = 0.2

    def __init__(self, name: str, capacity: int, reactor: Any) -> None:
        self.name = name
        self.capacity = max(MIN_CAPACITY, capacity)
        self.reactor = reactor
        self.dropped = 0
        self.wakeups = 0
        self._buffer: deque[Tick] = deque()  # appended by the reactor thread only, emptied by the worker
        self._wake_at = max(1, int(self.capacity * WAKE_FRACTION))
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = False
        self._waiters: list[Deferred[None]] = []
        self._drops_unlogged = 0
        self._drop_logged_at = -math.inf

    # ---------------------------------------------------------------- reactor thread

    def deliver(self, ticks: Sequence[Tick]) -> None:
        buffer = self._buffer
        for tick in ticks:
            if len(buffer) < self.capacity:  # only this thread appends: the check holds until the append
                buffer.append(tick)
            else:
                self._dropped_one()
        if len(buffer) >= self._wake_at and not self._wakeup.is_set():
            self._wakeup.set()

    @property
    def buffered(self) -> int:
        """Ticks delivered and not yet handled."""
        return len(self._buffer)

    def _dropped_one(self) -> None:
        self.dropped += 1
        self._drops_unlogged += 1
        now = time.monotonic()
        if now - self._drop_logged_at >= DROP_LOG_INTERVAL:
            log.warn(
                "{sink}: queue full ({capacity} packets), dropped {count} packets "
                "({total} so far); the disk or network behind it is too slow",
                sink=self.name, capacity=self.capacity, count=self._drops_unlogged, total=self.dropped,
            )
            self._drop_logged_at = now
            self._drops_unlogged = 0

    def start(self) -> None:
        """Start the worker thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"tia-{self.name}", daemon=True)
            self._thread.start()

    def stop(self) -> Deferred[None]:
        """Handle the buffered ticks, close, and fire when the worker is done. Unsubscribe first."""
        waiter: Deferred[None] = Deferred()
        if self._thread is None or self._finished:
            self._finished = True
            waiter.callback(None)
            return waiter
        self._waiters.append(waiter)
        self._stopping.set()
        self._wakeup.set()
        return waiter

    @property
    def finished(self) -> bool:
        return self._finished

    def _done(self) -> None:
        self._finished = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    # ---------------------------------------------------------------- worker thread

    def say(self, level: str, text: str, **fields: object) -> None:
        """Log from the worker through the reactor thread, where observers expect to run."""
        self.reactor.callFromThread(getattr(log, level), text, sink=self.name, **fields)

    def _run(self) -> None:
        try:
            self._guarded(self.opened)
            due = time.monotonic() + self.wake_seconds
            while True:
                remaining = due - time.monotonic()
                if remaining > 0:
                    self._wakeup.wait(remaining)
                self._wakeup.clear()
                self.wakeups += 1
                stopping = self._stopping.is_set()  # before draining: stop() comes after the last deliver
                buffer = self._buffer
                while buffer:
                    self._guarded(self.handle, buffer.popleft())
                now = time.monotonic()
                if now >= due:
                    self._guarded(self.periodic)
                    due += self.wake_seconds
                    if due <= now:  # fell behind by more than an interval: keep the pace, not the backlog
                        due = now + self.wake_seconds
                if stopping:
                    break
            self._guarded(self.closing)
        finally:
            self.reactor.callFromThread(self._done)

    def _guarded(self, step: Callable[..., None], *args: object) -> None:
        try:
            step(*args)
        except Exception:
            failure = Failure()
            self.reactor.callFromThread(
                log.failure, "{sink}: unexpected error in {step}", failure, sink=self.name, step=step.__name__
            )

    def opened(self) -> None:
        """First thing in the worker thread."""

    def handle(self, tick: Tick) -> None:
        """One tick, in order."""

    def periodic(self) -> None:
        """Every ``wake_seconds`` (on a fixed schedule), after the ticks that came meanwhile."""

    def closing(self) -> None:
        """After the last tick, before ``stop()`` fires."""
