"""The live display feed: a hub tap, display decimation, and lossy per-browser delivery.

The streaming path must not notice a browser. So the tap the hub calls per tick
only keeps that tick's blocks (``tick.blocks``, read-only views of its body) in
a list, which costs microseconds; everything else happens in a ``LoopingCall`` at the display
frame rate (25 Hz by default) on the reactor: the pending samples are reduced
to a min/max pair per display bucket (about ``BUCKETS_PER_SECOND`` buckets a
second, so a spike of one sample still shows, as in a scope's peak-detect
mode), quantized, encoded to JSON once and offered to every browser.

A browser that does not keep up holds at most one frame pending (the newest)
beyond what its socket buffers: older pending frames are dropped and counted,
and the page shows the gap. The tap is subscribed to the hub, and the frame loop
runs, only while at least one browser watches.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tia.protocol.packet import SampleArray

if TYPE_CHECKING:
    from tia.server.hub import StreamHub
    from tia.server.tick import Tick

log = Logger()

FRAME_RATE = 25.0
"""Display frames per second: smooth scrolling without waking the reactor needlessly."""
BUCKETS_PER_SECOND = 128
"""Display resolution per channel (min/max pairs a second): about a pixel each in a 10 s window."""
MAX_PENDING_SECONDS = 2.0
"""Samples kept between two frames at most (a stalled reactor); older ones are dropped."""
MAX_MARKERS_PER_FRAME = 64
"""Aperiodic values (events, buttons) kept per frame; a chattering axis cannot flood the page."""
MAX_BROWSERS = 8
"""Concurrent live views; the next one is refused with 503."""
SIGNIFICANT_DIGITS = 4
"""Quantization of the displayed values, relative to each channel's peak in the frame."""


@dataclass
class _Trace:
    """One periodic signal's pending samples, reduced for display once per frame."""

    index: int
    rate: float
    block_size: int
    factor: int  # raw samples per display bucket (1: every sample is shown)
    segments: list[tuple[int, SampleArray]] = field(default_factory=list)  # closed by a gap
    blocks: list[SampleArray] = field(default_factory=list)  # the open segment
    start: int = 0  # global sample number of the open segment's first sample
    next: int | None = None  # the sample number the next block should start with
    pending: int = 0  # samples held, closed segments included

    def add(self, tick: int, block: SampleArray) -> None:
        first = tick * self.block_size
        if self.next is not None and first != self.next:
            self._close()  # a gap (a source that paused, a restart): the page breaks the line
        if not self.blocks:
            self.start = first
        if self.pending + block.shape[1] > MAX_PENDING_SECONDS * self.rate:
            self.segments.clear()  # the frame loop has not run for seconds: show the newest only
            self.blocks.clear()
            self.pending, self.start = 0, first
        self.blocks.append(block)  # a read-only view of the tick's body: nothing can change it
        self.pending += block.shape[1]
        self.next = first + block.shape[1]

    def _close(self) -> None:
        if self.blocks:
            self.segments.append((self.start, _joined(self.blocks)))
            self.blocks = []

    def drain(self) -> list[dict[str, Any]]:
        """The display segments of everything pending; an incomplete last bucket waits for the next frame."""
        out = [self._reduce(start, data) for start, data in self.segments]
        self.segments, self.pending = [], 0
        if self.blocks:
            data = _joined(self.blocks)
            used = data.shape[1] - data.shape[1] % self.factor
            if used:
                out.append(self._reduce(self.start, data[:, :used]))
            rest = data[:, used:]
            self.blocks = [rest] if rest.shape[1] else []
            self.pending = rest.shape[1]
            self.start += used
        return [segment for segment in out if segment["y"] and segment["y"][0]]

    def _reduce(self, start: int, data: SampleArray) -> dict[str, Any]:
        factor = self.factor
        if factor == 1:
            values: npt.NDArray[np.float64] = data.astype(np.float64)
            t0, dt = start / self.rate, 1 / self.rate
        else:
            buckets = data.shape[1] // factor
            shaped = data[:, : buckets * factor].reshape(data.shape[0], buckets, factor)
            low, high = shaped.min(axis=2), shaped.max(axis=2)
            # in the order they occurred, so a falling edge is not drawn as a zigzag
            low_first = shaped.argmin(axis=2) <= shaped.argmax(axis=2)
            values = np.empty((data.shape[0], 2 * buckets), dtype=np.float64)
            values[:, 0::2] = np.where(low_first, low, high)
            values[:, 1::2] = np.where(low_first, high, low)
            # the pair sits at a quarter and three quarters of its bucket: evenly spaced points
            t0, dt = (start + factor / 4) / self.rate, factor / (2 * self.rate)
        quanta, integers = _quantize(values)
        return {"i": self.index, "t0": t0, "dt": dt, "q": quanta, "y": integers}


def _joined(blocks: list[SampleArray]) -> SampleArray:
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)


def _quantize(values: npt.NDArray[np.float64]) -> tuple[list[float], list[list[int]]]:
    """Per channel a power-of-ten quantum and integers: compact JSON, ample precision for a plot."""
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    peaks = np.abs(values).max(axis=1) if values.shape[1] else np.zeros(values.shape[0])
    quanta = []
    for peak in peaks.tolist():
        exponent = math.floor(math.log10(peak)) - (SIGNIFICANT_DIGITS - 1) if peak > 0 else 0
        quanta.append(10.0**exponent)
    integers = np.rint(values / np.asarray(quanta)[:, None]).astype(np.int64)
    return quanta, integers.tolist()


def decimation_factor(rate: float) -> int:
    """Raw samples per display bucket for a signal sampled at ``rate``."""
    return max(1, round(rate / BUCKETS_PER_SECOND))


class DisplayTap:
    """The hub subscriber: keeps each tick's blocks until the next display frame."""

    def __init__(self, hub: StreamHub) -> None:
        self.hub = hub
        self.packet_rate = float(hub.packet_rate)
        self._traces: dict[int, _Trace] = {}
        self._marker_signals: dict[int, tuple[str, tuple[str, ...]]] = {}
        for index, signal in enumerate(hub.metainfo.signals):
            if signal.type.aperiodic:
                self._marker_signals[signal.type.flag] = (signal.type.name, signal.channel_names)
            else:
                self._traces[signal.type.flag] = _Trace(
                    index, signal.sampling_rate, signal.block_size, decimation_factor(signal.sampling_rate)
                )
        self._markers: list[dict[str, Any]] = []
        self.last_tick: int | None = None

    def describe(self) -> dict[str, Any]:
        """What the page needs to lay out the plot (sent once per event stream)."""
        signals = []
        for index, signal in enumerate(self.hub.metainfo.signals):
            trace = self._traces.get(signal.type.flag)
            signals.append({
                "i": index, "type": signal.type.name, "rate": signal.sampling_rate,
                "block_size": signal.block_size, "labels": list(signal.channel_names),
                "aperiodic": signal.type.aperiodic,
                "factor": trace.factor if trace is not None else None,
            })
        return {"packet_rate": self.packet_rate, "frame_rate": FRAME_RATE, "signals": signals}

    def deliver(self, ticks: Sequence[Tick]) -> None:
        for tick in ticks:
            packet_id = tick.packet_id
            for flag, block in tick.blocks:
                trace = self._traces.get(flag)
                if trace is not None:
                    trace.add(packet_id, block)
                elif flag in self._marker_signals and len(self._markers) < MAX_MARKERS_PER_FRAME:
                    name, labels = self._marker_signals[flag]
                    values = block[:, 0].tolist()
                    if len(values) == 1:
                        text = f"{values[0]:g}"
                    else:
                        text = ", ".join(f"{label}={value:g}" for label, value in zip(labels, values, strict=False))
                    self._markers.append({"t": packet_id / self.packet_rate, "type": name, "text": text})
            self.last_tick = packet_id

    def frame(self) -> dict[str, Any] | None:
        """Everything since the last frame, reduced for display; None when no tick came."""
        if self.last_tick is None:
            return None
        segments = [segment for trace in self._traces.values() for segment in trace.drain()]
        markers, self._markers = self._markers, []
        now = (self.last_tick + 1) / self.packet_rate
        self.last_tick = None
        return {"now": now, "s": segments, "m": markers}

    def reset(self) -> None:
        """Forget pending data (nobody watches any more)."""
        for trace in self._traces.values():
            trace.segments, trace.blocks, trace.pending, trace.next = [], [], 0, None
        self._markers = []
        self.last_tick = None


def sse_event(data: dict[str, Any], event: str | None = None) -> bytes:
    """One Server-Sent Events message: compact JSON never contains a newline."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@implementer(IPushProducer)
class BrowserStream:
    """One browser's event stream; registered as a streaming producer so a full socket pauses it.

    While paused, only the newest frame waits; each one it replaces is counted in
    ``dropped``. Memory per browser is thus the transport's buffer plus one frame.
    """

    def __init__(self, write: Callable[[bytes], None], finish: Callable[[], None], peer: str) -> None:
        self._write = write
        self._finish = finish
        self.peer = peer
        self.paused = False
        self.pending: bytes | None = None
        self.sent = 0
        self.dropped = 0
        self.closed = False

    def offer(self, data: bytes) -> None:
        if self.closed:
            return
        if self.paused:
            if self.pending is not None:
                self.dropped += 1
            self.pending = data
            return
        self.sent += 1
        self._write(data)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self.pending is not None and not self.closed:
            data, self.pending = self.pending, None
            self.sent += 1
            self._write(data)

    def stopProducing(self) -> None:
        self.closed = True
        self.pending = None

    def close(self) -> None:
        """End the stream from our side (the daemon stops)."""
        if not self.closed:
            self.closed = True
            self.pending = None
            self._finish()


class LiveDisplay:
    """Browsers, the tap and the frame loop; the tap is on the hub only while a browser watches."""

    def __init__(
        self, hub: StreamHub, clock: IReactorTime, frame_rate: float = FRAME_RATE, max_browsers: int = MAX_BROWSERS
    ) -> None:
        self.hub = hub
        self.tap = DisplayTap(hub)
        self.frame_rate = frame_rate
        self.max_browsers = max_browsers
        self.browsers: list[BrowserStream] = []
        self.frames = 0
        self.frames_dropped = 0  # by browsers already gone; add the live ones' for the total
        self._loop = LoopingCall(self._emit)
        self._loop.clock = clock

    @property
    def dropped_total(self) -> int:
        return self.frames_dropped + sum(browser.dropped for browser in self.browsers)

    @property
    def sent_total(self) -> int:
        return self.frames

    def hello(self) -> bytes:
        return b"retry: 2000\n\n" + sse_event(self.tap.describe(), "meta")

    def add(self, browser: BrowserStream) -> bool:
        """Start feeding ``browser``; False when the display is full."""
        if len(self.browsers) >= self.max_browsers:
            return False
        self.browsers.append(browser)
        if len(self.browsers) == 1:
            self.tap.reset()
            self.hub.subscribe(self.tap)
            self._loop.start(1 / self.frame_rate, now=False).addErrback(self._loop_died)
        log.info("live view opened by {peer} ({count} watching)", peer=browser.peer, count=len(self.browsers))
        return True

    def remove(self, browser: BrowserStream) -> None:
        if browser not in self.browsers:
            return
        self.browsers.remove(browser)
        self.frames_dropped += browser.dropped
        log.info(
            "live view of {peer} closed after {sent} frames ({dropped} dropped)",
            peer=browser.peer, sent=browser.sent, dropped=browser.dropped,
        )
        if not self.browsers:
            self._idle()

    def close(self) -> None:
        """End every stream (the daemon stops)."""
        for browser in tuple(self.browsers):
            self.remove(browser)
            browser.close()
        self._idle()

    def _idle(self) -> None:
        self.hub.unsubscribe(self.tap)
        if self._loop.running:
            self._loop.stop()
        self.tap.reset()

    def _emit(self) -> None:
        try:
            frame = self.tap.frame()
            if frame is None:
                return
            data = sse_event(frame)
            self.frames += 1
            for browser in tuple(self.browsers):
                browser.offer(data)
        except Exception:
            log.failure("building a display frame failed; the live view goes on")

    def _loop_died(self, failure: Failure) -> None:
        log.failure("the live view's frame loop stopped", failure=failure)
