"""Device-clocked sources: samples that arrive at the device's pace, not the master clock's.

An LSL inlet, a BrainFlow board or a producer thread delivers samples when
its own clock says so, in chunks of any size. They go into a ``DeviceBuffer``
(a thread-safe FIFO); each master tick pops exactly one complete block.

The policy, which never invents or silently drops a sample:

- *Short*: no complete block at a tick -> the signal is absent from that
  packet (``read`` returns ``None``; the hub accepts that only from sources
  with ``device_clocked = True``). Counted, and logged at most every
  ``REPORT_SECONDS``. The samples are sent one tick later, so a late device
  adds latency instead of gaps.
- *Over-full*: more than ``max_latency`` seconds buffered (the device runs
  fast, or the server stalled) -> the oldest samples are dropped, counted and
  logged as a warning. That bound keeps latency and memory finite.
- *Rate*: the delivered rate is measured by a least-squares fit of samples
  received against arrival time over a sliding window (``rate_window``) and
  compared with the nominal rate; beyond ``rate_tolerance`` percent it is
  logged with the error in ppm (and again when it is back within tolerance).
- *Lost* (periodic types only: markers may be silent for long): no sample
  for ``lost_after`` seconds -> the stream is lost (logged;
  the signal is absent), recovery is logged with the gap's length. Lost for
  ``give_up_after`` seconds (0: never give up) -> a source failure: ``read``
  raises and the source's ``on_error`` policy applies.

Everything a producer thread wants to say is queued and logged from the
reactor thread (in ``read``), so all logging stays on one thread.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from twisted.logger import Logger
from zope.interface import implementer

from tia.protocol.packet import SampleArray
from tia.sources.base import IDeviceClockedSource, ISource, OptionError, SourceError, SourceSpec

log = Logger()

REPORT_SECONDS = 10.0
DEFAULT_MAX_LATENCY = 1.0
DEFAULT_RATE_TOLERANCE = 0.5  # percent
DEFAULT_RATE_WINDOW = 10.0
DEFAULT_LOST_AFTER = 2.0
DEFAULT_GIVE_UP_AFTER = 30.0
MAX_RATE_POINTS = 4096


def parse_seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or math.isinf(value):
        raise ValueError("expected a positive number of seconds")
    return value


def parse_seconds_or_zero(text: str) -> float:
    value = float(text)
    if not value >= 0 or math.isinf(value):
        raise ValueError("expected a number of seconds >= 0 (0: never)")
    return value


def parse_percent(text: str) -> float:
    value = float(text.strip().removesuffix("%"))
    if not value > 0 or math.isinf(value):
        raise ValueError("expected a positive percentage, e.g. 0.5")
    return value


DEVICE_OPTIONS: dict[str, Callable[[str], object]] = {
    "max_latency": parse_seconds,
    "rate_tolerance": parse_percent,
    "rate_window": parse_seconds,
    "lost_after": parse_seconds,
    "give_up_after": parse_seconds_or_zero,
}


@dataclass(frozen=True)
class BufferStats:
    """Counters of a device buffer, for logs and metrics."""

    received: int  # samples pushed by the device
    delivered: int  # samples sent in blocks
    dropped: int  # oldest samples discarded because over max_latency
    short_ticks: int  # ticks without a complete block (after the first block)
    buffered: int  # samples waiting
    measured_rate: float | None  # Hz over the window, None until enough data
    rate_error_ppm: float | None  # (measured / nominal - 1) * 1e6


class DeviceBuffer:
    """A bounded, thread-safe FIFO of samples: producers push chunks, the tick pops one block.

    ``clock`` is the time base of the rate measurement (monotonic seconds;
    tests pass a fake one).
    """

    def __init__(
        self,
        channels: int,
        block_size: int,
        nominal_rate: float,
        max_latency: float = DEFAULT_MAX_LATENCY,
        rate_window: float = DEFAULT_RATE_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channels = channels
        self.block_size = block_size
        self.nominal_rate = nominal_rate
        self.capacity = max(math.ceil(max_latency * nominal_rate), 2 * block_size)
        self.rate_window = rate_window
        self._clock = clock
        self._lock = threading.Lock()
        self._chunks: deque[SampleArray] = deque()
        self._count = 0
        self.received = 0
        self.delivered = 0
        self.dropped = 0
        self.short_ticks = 0
        self._points: deque[tuple[float, int]] = deque(maxlen=MAX_RATE_POINTS)

    def push(self, samples: npt.ArrayLike, now: float | None = None) -> int:
        """Append a (channels, n) chunk (any thread); returns how many old samples were dropped."""
        chunk = np.asarray(samples, dtype=np.float32)
        if chunk.ndim == 1 and self.channels == 1:
            chunk = chunk.reshape(1, -1)
        if chunk.ndim != 2 or chunk.shape[0] != self.channels:
            raise ValueError(f"expected ({self.channels}, n) samples, got shape {chunk.shape}")
        n = chunk.shape[1]
        if n == 0:
            return 0
        stamp = self._clock() if now is None else now
        with self._lock:
            self._chunks.append(np.array(chunk, copy=True))
            self._count += n
            self.received += n
            self._points.append((stamp, self.received))
            while self._points and self._points[0][0] < stamp - self.rate_window:
                self._points.popleft()
            excess = self._count - self.capacity
            if excess > 0:
                self._discard(excess)
                self.dropped += excess
            return max(excess, 0)

    def pop_block(self) -> SampleArray | None:
        """Exactly one (channels, block size) block, or ``None`` (counted) if not complete yet."""
        with self._lock:
            if self._count < self.block_size:
                if self.delivered:
                    self.short_ticks += 1
                return None
            pieces: list[SampleArray] = []
            need = self.block_size
            while need:
                head = self._chunks[0]
                if head.shape[1] <= need:
                    pieces.append(self._chunks.popleft())
                    need -= head.shape[1]
                else:
                    pieces.append(head[:, :need])
                    self._chunks[0] = head[:, need:]
                    need = 0
            self._count -= self.block_size
            self.delivered += self.block_size
        block = pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=1)
        return np.ascontiguousarray(block)

    def _discard(self, count: int) -> None:
        """Drop the ``count`` oldest samples (lock held)."""
        while count:
            head = self._chunks[0]
            if head.shape[1] <= count:
                self._chunks.popleft()
                count -= head.shape[1]
            else:
                self._chunks[0] = head[:, count:]
                count = 0
        self._count = sum(chunk.shape[1] for chunk in self._chunks)

    def clear(self) -> None:
        with self._lock:
            self._chunks.clear()
            self._count = 0

    def reset_rate(self) -> None:
        """Forget the rate history (after a gap, which would bias the fit)."""
        with self._lock:
            self._points.clear()

    def measured_rate(self) -> float | None:
        """Least-squares samples/second over the window; ``None`` until half a window is covered."""
        with self._lock:
            points = list(self._points)
        if len(points) < 3 or points[-1][0] - points[0][0] < self.rate_window / 2:
            return None
        t = np.array([p[0] for p in points], dtype=np.float64)
        n = np.array([p[1] for p in points], dtype=np.float64)
        t -= t.mean()
        denominator = float(np.dot(t, t))
        if denominator == 0:
            return None
        return float(np.dot(t, n - n.mean()) / denominator)

    def stats(self) -> BufferStats:
        rate = self.measured_rate() if self.nominal_rate > 0 else None
        error = None if rate is None else (rate / self.nominal_rate - 1) * 1e6
        with self._lock:
            return BufferStats(
                self.received, self.delivered, self.dropped, self.short_ticks, self._count, rate, error
            )


@implementer(IDeviceClockedSource)
class DeviceSource:
    """Base of sources fed by their own thread: a buffer, loss detection and reports.

    Subclasses implement ``acquire(stopping)``, run in a daemon thread until
    ``stopping`` is set: it opens the device, calls ``deliver`` with each
    (channels, n) chunk and raises on a failure it cannot recover from.
    On an aperiodic signal type every sample is one value, sent one per tick.
    """

    device_clocked = True
    description = "device"

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        options = spec.options
        self.max_latency = float(options.get("max_latency", DEFAULT_MAX_LATENCY))  # type: ignore[arg-type]
        self.rate_tolerance = float(options.get("rate_tolerance", DEFAULT_RATE_TOLERANCE))  # type: ignore[arg-type]
        self.rate_window = float(options.get("rate_window", DEFAULT_RATE_WINDOW))  # type: ignore[arg-type]
        self.lost_after = float(options.get("lost_after", DEFAULT_LOST_AFTER))  # type: ignore[arg-type]
        self.give_up_after = float(options.get("give_up_after", DEFAULT_GIVE_UP_AFTER))  # type: ignore[arg-type]
        if self.give_up_after and self.give_up_after < self.lost_after:
            raise OptionError("give_up_after", f"must be 0 or at least lost_after ({self.lost_after:g} s)")
        self.buffer = self._new_buffer()
        self._notes: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: str | None = None
        self._last_delivery: float | None = None
        self._started_at = 0.0
        self._lost_since: float | None = None
        self.losses = 0
        self._rate_off = False
        self._next_report = 0.0
        self._reported = (0, 0)  # (dropped, short ticks) already logged

    # ------------------------------------------------------------------ subclass side

    def acquire(self, stopping: threading.Event) -> None:
        """Run in the device thread: open, deliver until ``stopping``, close."""
        raise NotImplementedError

    def deliver(self, samples: npt.ArrayLike) -> None:
        """Hand a (channels, n) chunk to the buffer (device thread)."""
        self.buffer.push(samples)
        self._last_delivery = time.monotonic()

    def note(self, level: str, message: str) -> None:
        """Queue a log line for the reactor thread: level is info, warn or error."""
        self._notes.put((level, message))

    # ------------------------------------------------------------------ ISource

    def _new_buffer(self) -> DeviceBuffer:
        rate = float(self.spec.sampling_rate)
        return DeviceBuffer(
            len(self.spec.channels), self.spec.block_size, rate, self.max_latency, self.rate_window
        )

    def start(self) -> None:
        self.buffer = self._new_buffer()
        self._stopping.clear()
        self._failure = None
        self._last_delivery = None
        self._started_at = self._next_report = time.monotonic()
        self._lost_since = None
        self._thread = threading.Thread(
            target=self._run, name=f"tia-source-{self.spec.name}", daemon=True
        )
        self._thread.start()
        log.info("source [{name}] waiting for {what}", name=self.spec.name, what=self.description)

    def stop(self) -> None:
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5.0)
            if thread.is_alive():
                log.warn("source [{name}]: the device thread did not stop within 5 s", name=self.spec.name)
        self._drain_notes()

    def _run(self) -> None:
        try:
            self.acquire(self._stopping)
        except Exception as error:
            self._failure = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        else:
            if not self._stopping.is_set():
                self._failure = f"{self.description} ended"

    def read(self, tick: int) -> SampleArray | None:
        self._drain_notes()
        now = time.monotonic()
        if self._failure is not None:
            raise SourceError(f"source [{self.spec.name}]: {self._failure}")
        if not self.spec.aperiodic:  # silence is normal between markers
            self._watch(now)
        block = self.buffer.pop_block()
        first_drop = self.buffer.dropped and not self._reported[0]
        if now >= self._next_report or first_drop:
            self._next_report = now + REPORT_SECONDS
            self._report()
        return block

    # ------------------------------------------------------------------ reactor side

    def _drain_notes(self) -> None:
        while True:
            try:
                level, message = self._notes.get_nowait()
            except queue.Empty:
                return
            emit = {"info": log.info, "warn": log.warn, "error": log.error}.get(level, log.info)
            emit("source [{name}]: {message}", name=self.spec.name, message=message)

    def _watch(self, now: float) -> None:
        """Loss and recovery, judged by the time since the last delivery."""
        last = self._last_delivery
        silent_since = self._started_at if last is None else last
        if now - silent_since >= self.lost_after:
            if self._lost_since is None:
                self._lost_since = silent_since
                self.losses += 1
                what = "no sample yet" if last is None else "no sample"
                log.warn(
                    "source [{name}]: {what} from {device} for {seconds:.1f} s: lost; its signal is "
                    "absent until samples arrive again", name=self.spec.name, what=what,
                    device=self.description, seconds=now - silent_since,
                )
            if self.give_up_after and now - self._lost_since >= self.give_up_after:
                # not sticky: with on_error = zero-fill the hub keeps asking, and a stream
                # that comes back is served again
                raise SourceError(
                    f"source [{self.spec.name}]: {self.description} lost for "
                    f"{now - self._lost_since:.1f} s (give_up_after = {self.give_up_after:g} s)"
                )
        elif self._lost_since is not None:
            log.info(
                "source [{name}]: {device} delivers again after {seconds:.1f} s; missing samples are "
                "not invented", name=self.spec.name, device=self.description, seconds=now - self._lost_since,
            )
            self._lost_since = None
            self.buffer.reset_rate()

    def _report(self) -> None:
        """Periodic: drops, short ticks and rate against nominal."""
        stats = self.buffer.stats()
        dropped, short = self._reported
        if stats.short_ticks > short and not self.spec.aperiodic:
            log.warn(
                "source [{name}]: {count} ticks without a complete block in the last {seconds:g} s "
                "(device late or slow; those packets lack its signal)",
                name=self.spec.name, count=stats.short_ticks - short, seconds=REPORT_SECONDS,
            )
        if stats.dropped > dropped:
            log.warn(
                "source [{name}]: {count} oldest samples dropped in the last {seconds:g} s "
                "(more than max_latency = {latency:g} s buffered: device fast or server stalled)",
                name=self.spec.name, count=stats.dropped - dropped, seconds=REPORT_SECONDS,
                latency=self.max_latency,
            )
        self._reported = (stats.dropped, stats.short_ticks)
        if stats.rate_error_ppm is None or self.spec.aperiodic or self._lost_since is not None:
            return
        off = abs(stats.rate_error_ppm) > self.rate_tolerance * 1e4
        if off:
            log.warn(
                "source [{name}] delivers {rate:.4f} Hz against a nominal {nominal:g} Hz "
                "({ppm:+.0f} ppm, tolerance {tolerance:g} %)",
                name=self.spec.name, rate=stats.measured_rate, nominal=float(self.spec.sampling_rate),
                ppm=stats.rate_error_ppm, tolerance=self.rate_tolerance,
            )
        elif self._rate_off:
            log.info(
                "source [{name}] rate back within tolerance: {rate:.4f} Hz ({ppm:+.0f} ppm)",
                name=self.spec.name, rate=stats.measured_rate, ppm=stats.rate_error_ppm,
            )
        self._rate_off = off

    def metrics(self) -> dict[str, float | int | bool | None]:
        """Counters for monitoring: buffer stats, losses, whether lost now."""
        stats = self.buffer.stats()
        return {
            "received": stats.received,
            "delivered": stats.delivered,
            "dropped": stats.dropped,
            "short_ticks": stats.short_ticks,
            "buffered": stats.buffered,
            "measured_rate": stats.measured_rate,
            "rate_error_ppm": stats.rate_error_ppm,
            "losses": self.losses,
            "lost": self._lost_since is not None,
        }


@implementer(ISource)
class ProducerSource(DeviceSource):
    """Samples pushed by a Python callable that runs in its own thread (``driver = producer``).

    ``callable = package.module:function`` is called as ``function(push, stopping)``:
    it acquires at its own pace, calls ``push(samples)`` with (channels, n)
    arrays (or a flat list for one channel), and returns once the
    ``threading.Event`` ``stopping`` is set.
    """

    description = "the producer thread"

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        function = spec.options.get("callable")
        if not callable(function):
            raise SourceError(f"source [{spec.name}] needs a callable, got {function!r}")
        self._function: Callable[..., object] = function
        self.description = f"the producer {getattr(function, '__qualname__', function)!s}"

    def acquire(self, stopping: threading.Event) -> None:
        self._function(self.deliver, stopping)
