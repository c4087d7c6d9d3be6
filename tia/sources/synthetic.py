"""Synthetic sources: deterministic waves computed from the global sample index.

Because every value is a function of the sample index ``k`` (or, for noise,
of a seeded generator advanced tick by tick), a client can check exactly what
it received: ``ramp`` channel ``c`` (1-based) carries ``c * 1000 + k % 1000``.
On an aperiodic signal type the wave is sampled once per tick and sent only
when it changes, which turns ``square`` into button presses.
``aperiodic_default`` is what ``--signal TYPE:CHANNELS`` serves on each
aperiodic type when no wave is named: something that happens now and then.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt
from zope.interface import implementer

from tia.protocol.packet import SampleArray
from tia.protocol.signals import SignalType
from tia.sources.base import ISource, SourceSpec

Wave = Callable[[npt.NDArray[np.int64]], npt.NDArray[np.float64]]


def _per_channel(spec: SourceSpec, key: str, default: float) -> npt.NDArray[np.float64]:
    """An option given once for all channels or once per channel, as a column."""
    raw = spec.options.get(key, default)
    values = np.atleast_1d(np.asarray(raw, dtype=np.float64))
    count = len(spec.channels)
    if values.size == 1:
        values = np.repeat(values, count)
    if values.size != count:
        raise ValueError(f"{key} needs 1 or {count} values, got {values.size}")
    return values.reshape(count, 1)


def _cycles(spec: SourceSpec, frequency: npt.NDArray[np.float64], k: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Fraction of a period elapsed at sample ``k`` for each channel, in [0, 1)."""
    rate = spec.sampling_rate
    # reduce k modulo the rate first so long runs keep full float precision
    k_mod = np.mod(k * rate.denominator, rate.numerator).astype(np.float64)
    whole = np.floor_divide(k * rate.denominator, rate.numerator).astype(np.float64)
    return np.mod(frequency * whole + frequency * k_mod / rate.numerator, 1.0)


def ramp(spec: SourceSpec) -> Wave:
    numbers = np.arange(1, len(spec.channels) + 1, dtype=np.int64).reshape(-1, 1)

    def wave(k: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        return (numbers * 1000 + np.mod(k, 1000)).astype(np.float64)

    return wave


def sine(spec: SourceSpec) -> Wave:
    frequency = _per_channel(spec, "frequency", 10.0)
    amplitude = _per_channel(spec, "amplitude", 1.0)
    offset = _per_channel(spec, "offset", 0.0)
    phase = _per_channel(spec, "phase", 0.0)

    def wave(k: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        angle = 2 * math.pi * _cycles(spec, frequency, k) + np.deg2rad(phase)
        return offset + amplitude * np.sin(angle)

    return wave


def square(spec: SourceSpec) -> Wave:
    frequency = _per_channel(spec, "frequency", 1.0)
    amplitude = _per_channel(spec, "amplitude", 1.0)
    offset = _per_channel(spec, "offset", 0.0)
    duty = _per_channel(spec, "duty", 0.5)

    def wave(k: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        high = _cycles(spec, frequency, k) < duty
        return offset + amplitude * high

    return wave


def noise(spec: SourceSpec) -> Wave:
    amplitude = _per_channel(spec, "amplitude", 1.0)
    offset = _per_channel(spec, "offset", 0.0)
    generator = np.random.Generator(np.random.PCG64(int(spec.options.get("seed", 0))))  # type: ignore[call-overload]
    count = len(spec.channels)

    def wave(k: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        return offset + amplitude * generator.standard_normal((count, k.size))

    return wave


MAX_TABLE_SAMPLES = 1 << 22


def _period(spec: SourceSpec) -> int | None:
    """Samples after which the wave repeats exactly, if it does (noise never does)."""
    if spec.driver == "ramp":
        return 1000
    if spec.driver not in ("sine", "square"):
        return None
    default = 10.0 if spec.driver == "sine" else 1.0
    period = 1
    for frequency in np.atleast_1d(np.asarray(spec.options.get("frequency", default), dtype=np.float64)):
        cycles_per_sample = Fraction(str(float(frequency))) / spec.sampling_rate
        period = math.lcm(period, cycles_per_sample.denominator)
        if period > MAX_TABLE_SAMPLES:
            return None
    return period


WAVES: dict[str, Callable[[SourceSpec], Wave]] = {
    "sine": sine,
    "square": square,
    "noise": noise,
    "ramp": ramp,
}


def aperiodic_default(signal_type: SignalType, channels: int) -> tuple[str, dict[str, object]]:
    """The driver and options ``--signal TYPE:CHANNELS`` uses on an aperiodic type without a wave.

    Each sends only when something happens, with values of the type's kind:
    integer codes for events and keys, 1 (pressed) and 0 (released) for buttons.
    """
    name = signal_type.name
    if name in ("button", "mouse-button"):
        return "square", {"frequency": [1.0]}  # pressed for half a second, then released: one press a second
    if name == "axis":  # a joystick circling once every 4 s (x, y, x, ... a quarter period apart), -1..1
        return "sine", {"frequency": [0.25], "phase": [90.0 * (n % 4) for n in range(channels)]}
    if name == "keycode":
        return "events", {"interval": 1.0, "codes": [65.0, 66.0, 67.0]}  # keys A, B, C in turn, one a second
    if name == "event":
        return "events", {"interval": 1.0, "codes": [1.0]}  # code 1 once a second: driver = events' defaults
    raise ValueError(f"{name} is not an aperiodic signal type")


@implementer(ISource)
class SyntheticSource:
    """Any wave of ``WAVES`` served as a source.

    A wave that repeats within ``MAX_TABLE_SAMPLES`` samples is computed for one
    period up front and then sliced, so a 64-channel sine costs a copy per tick.
    """

    device_clocked = False

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self._wave = WAVES[spec.driver](spec)
        self._offsets = np.arange(spec.block_size, dtype=np.int64)
        self._last: SampleArray | None = None
        self._table: SampleArray | None = None
        period = _period(spec)
        if period is not None and period * len(spec.channels) <= MAX_TABLE_SAMPLES:
            samples = np.arange(period, dtype=np.int64)
            table = np.ascontiguousarray(self._wave(samples), dtype=np.float32)
            # one block of wrap-around so every block is a plain slice
            self._table = np.concatenate([table] * (1 + -(-spec.block_size // period)), axis=1)
            self._period = period

    def start(self) -> None:
        self._last = None

    def stop(self) -> None:
        pass

    def read(self, tick: int) -> SampleArray | None:
        first = tick * self.spec.block_size
        if self._table is not None:
            start = first % self._period
            block = self._table[:, start : start + self.spec.block_size].copy()
        else:
            block = np.ascontiguousarray(self._wave(first + self._offsets), dtype=np.float32)
        if not self.spec.aperiodic:
            return block
        changed = self._last is None or not np.array_equal(block, self._last)
        self._last = block
        return block if changed else None


@implementer(ISource)
class EventSource:
    """Event codes, cycling through ``codes``, one every ``interval`` seconds.

    Aperiodic by nature: a packet carries the ``event`` signal only on the tick
    an event occurs, first at ``interval`` after the server starts.
    """

    device_clocked = False

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        interval = Fraction(str(spec.options.get("interval", 1)))
        self._interval_ticks = interval * spec.sampling_rate / spec.block_size
        if self._interval_ticks <= 0:
            raise ValueError("interval must be positive")
        codes: Any = spec.options.get("codes", [1])
        self._codes = [float(c) for c in np.atleast_1d(codes)]
        self._shape = (len(spec.channels), 1)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def read(self, tick: int) -> SampleArray | None:
        index = math.floor(tick / self._interval_ticks)
        if tick == 0 or index == math.floor((tick - 1) / self._interval_ticks):
            return None
        code = self._codes[(index - 1) % len(self._codes)]
        return np.full(self._shape, code, dtype=np.float32)
