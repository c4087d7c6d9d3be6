"""A master clock time base that fires within microseconds: Linux timerfd under the reactor.

The reactor's own timers wait in ``epoll_wait``, whose timeout has 1 ms
granularity, so a 1 kHz grid fires up to a millisecond late. ``PreciseClock``
schedules through a ``timerfd`` instead (nanosecond resolution, no timer
slack) while the reactor still sleeps in ``epoll_wait``: ticks typically
arrive within tens of microseconds (the tail is the machine's own wake-up
latency) and nothing busy-waits. For a grid of ticks the timer is periodic, so
the kernel re-arms it by itself.

Its calls are ``TimedCall`` objects of its own (``IDelayedCall``), so it
depends on no internals of Twisted's ``DelayedCall``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import heapq
import itertools
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from twisted.internet.error import AlreadyCalled, AlreadyCancelled
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime, IReadDescriptor
from twisted.internet.posixbase import PosixReactorBase
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger()

__all__ = ["PreciseClock", "TimedCall", "Timerfd"]

# ----------------------------------------------------------------- Linux timerfd through ctypes

_CLOCK_MONOTONIC = 1
_TFD_CLOEXEC = 0o2000000
_TFD_NONBLOCK = 0o4000
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _TimerfdCalls(NamedTuple):
    create: Any
    settime: Any


@functools.cache
def _timerfd_calls() -> _TimerfdCalls | None:
    """libc's timerfd functions, or None where there are none (Python 3.11 has no os.timerfd_*)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the symbols already loaded, libc's among them
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        try:  # unusual builds without libc in the global namespace (find_library may run ldconfig)
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            create, settime = libc.timerfd_create, libc.timerfd_settime
        except (OSError, AttributeError):
            return None
    create.argtypes, create.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.POINTER(_Itimerspec)]
    settime.restype = ctypes.c_int
    return _TimerfdCalls(create, settime)


class Timerfd:
    """A non-blocking one-shot CLOCK_MONOTONIC timerfd, armed at absolute nanoseconds."""

    def __init__(self) -> None:
        calls = _timerfd_calls()
        if calls is None:
            raise OSError(errno.ENOSYS, "timerfd is not available")
        self._settime = calls.settime
        fd: int = calls.create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"timerfd_create: {os.strerror(code)}")
        self.fd = fd
        self._spec = _Itimerspec()

    def arm(self, deadline_ns: int, period_ns: int = 0) -> None:
        """Fire at ``deadline_ns`` on CLOCK_MONOTONIC (a past deadline fires at once), then every
        ``period_ns`` if that is not 0; a deadline of 0 disarms."""
        value, interval = self._spec.it_value, self._spec.it_interval
        value.tv_sec, value.tv_nsec = divmod(deadline_ns, 1_000_000_000)
        interval.tv_sec, interval.tv_nsec = divmod(period_ns, 1_000_000_000)
        if self._settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"timerfd_settime: {os.strerror(code)}")

    def drain(self) -> int:
        """Read the expiration counter so the fd stops being readable: expirations since the last
        read (0 for a spurious wake-up)."""
        try:
            return int.from_bytes(os.read(self.fd, 8), sys.byteorder)
        except BlockingIOError:
            return 0

    def close(self) -> None:
        os.close(self.fd)


# A timer already set to fire within this of a deadline is left alone. A LoopingCall's
# deadlines sit a microsecond or two after its grid points (it reads the time twice
# when rescheduling), so a periodic timer on the grid fires that much before or after
# them; firing a little early costs at worst one more wake-up (nothing is run before
# its time), firing late is bounded by this.
_PERIODIC_SLACK_NS = 10_000
_MIN_PERIOD_NS, _MAX_PERIOD_NS = 50_000, 10_000_000_000  # periods outside: one-shot


def _deadline_ns(when: float) -> int:
    """Monotonic seconds to timerfd nanoseconds, rounded up so the timer never fires before ``when``."""
    return max(1, math.ceil(when * 1e9) + 1)


_PENDING, _CALLED, _CANCELLED = range(3)


@implementer(IDelayedCall)
class TimedCall:
    """A call scheduled on a ``PreciseClock``: ``IDelayedCall``, and no more than it needs."""

    __slots__ = ("_clock", "_state", "args", "func", "kw", "time")

    def __init__(
        self, clock: PreciseClock, when: float, func: Callable[..., Any], args: tuple[object, ...],
        kw: dict[str, object],
    ) -> None:
        self._clock = clock
        self.time = when
        self.func, self.args, self.kw = func, args, kw
        self._state = _PENDING

    def getTime(self) -> float:
        return self.time

    def active(self) -> bool:
        return self._state == _PENDING

    def cancel(self) -> None:
        self._check_pending()
        self._state = _CANCELLED
        self._clock._cancelled(self)

    def delay(self, secondsLater: float) -> None:
        self._check_pending()
        self.time += secondsLater
        self._clock._moved(self)

    def reset(self, secondsFromNow: float) -> None:
        self._check_pending()
        self.time = self._clock.seconds() + secondsFromNow
        self._clock._moved(self)

    def _check_pending(self) -> None:
        if self._state == _CANCELLED:
            raise AlreadyCancelled()
        if self._state == _CALLED:
            raise AlreadyCalled()

    def _run(self) -> None:
        self._state = _CALLED
        self.func(*self.args, **self.kw)

    def __repr__(self) -> str:
        name = getattr(self.func, "__qualname__", None) or repr(self.func)
        return f"<TimedCall {name} at {self.time:.6f}>"


@implementer(IReactorTime, IReadDescriptor)
class PreciseClock:
    """An ``IReactorTime`` on ``time.monotonic()`` whose calls fire from a Linux timerfd.

    The reactor's timers are only as precise as its ``epoll_wait`` timeout
    (whole milliseconds). Here the pending calls live in our own heap and one
    timerfd, a reader of the reactor, is armed for the earliest of them: the
    reactor still sleeps in ``epoll_wait`` (no busy-waiting) but wakes when
    the kernel's high-resolution timer expires. ``time.monotonic()`` reads
    the same CLOCK_MONOTONIC the timerfd runs on, so deadlines need no offset.

    Reactor thread only. The timerfd is opened by the first ``callLater``
    and released by ``close()``; pending calls survive a close and run once
    the clock is used again.
    """

    def __init__(self, reactor: IReactorFDSet) -> None:
        self._reactor = reactor
        self._heap: list[tuple[float, int, TimedCall]] = []
        self._order = itertools.count()  # equal deadlines run in the order they were scheduled
        self._timer: Timerfd | None = None
        self._armed_ns: int | None = None  # when the timer fires next, None when disarmed
        self._period_ns = 0  # and every so often after that (0: once)
        self._fired_ns: int | None = None  # the expiry that woke us last
        self._grid_origin_ns = 0  # the grid of deadlines we have seen: a first one,
        self._grid_period_ns = 0  # and the period, estimated over the grid's whole length
        self._running = False

    @staticmethod
    def available(reactor: object) -> bool:
        """Linux, a real fd-based reactor, libc's timerfd working, and monotonic() on CLOCK_MONOTONIC."""
        if not isinstance(reactor, PosixReactorBase) or not IReactorFDSet.providedBy(reactor):
            return False  # e.g. MemoryReactor: nothing would ever read the timerfd
        if "CLOCK_MONOTONIC)" not in time.get_clock_info("monotonic").implementation:
            return False
        try:
            Timerfd().close()
        except OSError:
            return False  # no libc timerfd, or forbidden (seccomp)
        return True

    # IReactorTime

    def seconds(self) -> float:
        return time.monotonic()

    def callLater(self, delay: float, callable: Callable[..., Any], *args: object, **kw: object) -> IDelayedCall:
        if self._timer is None:
            self._open()  # first, so that an OSError leaves nothing half-scheduled
        call = TimedCall(self, time.monotonic() + max(0.0, delay), callable, args, kw)
        heapq.heappush(self._heap, (call.time, next(self._order), call))
        if not self._running:  # a call scheduled by a running one (each tick's next): armed after the run
            self._arm()
        return call

    def getDelayedCalls(self) -> Sequence[IDelayedCall]:
        return [call for _, _, call in self._heap]

    # IReadDescriptor

    def fileno(self) -> int:
        return -1 if self._timer is None else self._timer.fd

    def doRead(self) -> None:
        """The timer expired: run every due call in deadline order, then re-arm for the next."""
        if self._timer is None:
            return
        now = self.seconds()  # calls scheduled while running wait for the next pass
        self._running = True
        try:
            while self._heap and self._heap[0][0] <= now:
                _, _, call = heapq.heappop(self._heap)
                try:
                    call._run()
                except BaseException:  # as the reactor does for its own timed calls
                    log.failure("while handling timed call {call!r}", call=call)
        finally:
            self._running = False
            if self._timer is not None:  # a call may have closed the clock
                expirations = self._timer.drain()  # after the calls: the syscall does not delay them
                if expirations and self._armed_ns is not None:
                    self._fired_ns = self._armed_ns + (expirations - 1) * self._period_ns
                    self._armed_ns = self._fired_ns + self._period_ns if self._period_ns else None
            self._arm()

    def connectionLost(self, reason: Failure) -> None:
        """The reactor dropped us (its shutdown, or an error): release the timerfd."""
        if self._heap:
            log.warn(
                "precise clock lost its timer with {count} calls pending: {reason}",
                count=len(self._heap), reason=reason.getErrorMessage(),
            )
        self.close()

    def logPrefix(self) -> str:
        return "PreciseClock"

    # lifetime

    def close(self) -> None:
        """Stop watching the timerfd and close it; idempotent, and a later ``callLater`` reopens it."""
        if self._timer is not None:
            self._reactor.removeReader(self)  # while fileno() is still the timerfd
            self._timer.close()
            self._timer = None
        self._armed_ns, self._period_ns, self._fired_ns = None, 0, None
        self._grid_origin_ns = self._grid_period_ns = 0

    # internals

    def _open(self) -> None:
        if self._timer is None:
            self._timer = Timerfd()  # a fresh one: close() forgot what the old one was set to
            self._reactor.addReader(self)

    def _arm(self) -> None:
        """Set the timer for the earliest call, unless it is already set to fire then.

        The timer is made periodic with the distance from the expiry that woke
        us to the next deadline: for a grid of ticks (the master clock's
        ``LoopingCall``) the kernel then re-arms it by itself, and each tick
        saves a ``timerfd_settime`` call (about 10 us on this kind of VM).
        Whenever the next deadline is not where the timer will fire, it is set
        again, so other calls are exact and a stopped grid leaves no wake-ups.
        """
        if self._running or self._timer is None:
            return
        if not self._heap:
            if self._armed_ns is not None:
                self._timer.arm(0)
                self._armed_ns, self._period_ns = None, 0
            return
        target = _deadline_ns(self._heap[0][0])
        if self._armed_ns is not None and abs(self._armed_ns - target) <= _PERIODIC_SLACK_NS:
            return
        period = self._grid_period(target)
        self._timer.arm(target, period)
        self._armed_ns, self._period_ns = target, period

    def _grid_period(self, target: int) -> int:
        """The period of the grid ``target`` lies on (0: none).

        Measured from the grid's first deadline rather than from the last one,
        so the microsecond noise of single deadlines averages out and the
        kernel's timer stays on the grid for long stretches.
        """
        origin, period = self._grid_origin_ns, self._grid_period_ns
        if period:
            periods = round((target - origin) / period)
            if periods >= 1 and abs(target - origin - periods * period) <= period // 20:
                self._grid_period_ns = round((target - origin) / periods)
                return self._grid_period_ns
        fired = self._fired_ns
        if fired is not None and _MIN_PERIOD_NS <= target - fired <= _MAX_PERIOD_NS:
            self._grid_origin_ns, self._grid_period_ns = fired, target - fired  # a new grid begins
            return self._grid_period_ns
        return 0

    def _cancelled(self, call: TimedCall) -> None:
        self._heap = [entry for entry in self._heap if entry[2] is not call]
        heapq.heapify(self._heap)
        self._arm()

    def _moved(self, call: TimedCall) -> None:
        """``reset``/``delay`` moved ``call.time``: re-sort it and re-arm."""
        self._heap = [
            (call.time, next(self._order), call) if entry[2] is call else entry for entry in self._heap
        ]
        heapq.heapify(self._heap)
        self._arm()
