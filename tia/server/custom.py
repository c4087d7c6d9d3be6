"""The DSP half of custom signal info: channel selection and anti-aliased decimation, once per customization.

Only connections that asked for a customization pay for it. The hub still
encodes each tick once for everybody else; a ``CustomStream`` sits between
the hub and the real subscribers of the connections that asked for one
customization (``TCPDataProtocol`` or a unicast ``UDPDestination``), takes
the tick's blocks from ``tick.blocks`` (nothing is decoded), selects and
decimates them once for all those connections, encodes its own body and
hands it on. The real subscribers still add their own header and numbering.

Decimation by ``M``: a linear-phase FIR low-pass (Kaiser window, designed once
per factor) keeps 0.8 x the new Nyquist frequency within 0.035 dB and attenuates
everything from the new Nyquist frequency on by at least 49 dB (>= 40 dB is the
reference's figure); then every ``M``-th sample is kept. Output sample ``j`` of
a block is the filter's output at original sample ``j * M`` of that block, so
decimated samples sit on original indices ``k * M`` of the global sample count
(a block starts at ``tick * blockSize`` and ``M`` divides ``blockSize``) and the
packet timestamp still names the block's first sample. The filter's group
delay, ``(taps - 1) / 2`` input samples (59 samples for M = 4, 235 for M = 16),
is not compensated: a customized stream lags the plain one by that much. The
state (the last ``taps - 1`` input samples per channel) is kept per customized
stream and signal, so blocks join seamlessly; at the start, and after a gap in the
ticks (Stop then Start), it is primed with the first sample, as if the signal
had been constant before, which avoids a start-up ramp from zero.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from tia.protocol.custom import CustomSignal, CustomSignalInfo
from tia.protocol.metainfo import MetaInfo
from tia.protocol.packet import BodyLayout, SampleArray, SignalShape
from tia.server.tick import Subscriber, Subscribers, Tick

if TYPE_CHECKING:
    from tia.server.hub import StreamHub

PASSBAND_FRACTION = 0.8
"""Up to this fraction of the new Nyquist frequency the gain is flat (ripple <= 0.035 dB)."""
STOPBAND_ATTENUATION_DB = 50.0
"""Kaiser design target from the new Nyquist frequency on (measured >= 49.4 dB, factors 2..256)."""

FloatArray = npt.NDArray[np.float64]


@functools.cache
def decimation_filter(factor: int) -> FloatArray:
    """The anti-aliasing FIR taps for decimation by ``factor`` (odd length, linear phase).

    Designed once per factor: with frequencies relative to the input's Nyquist
    frequency the design does not depend on the sampling rate.
    """
    if factor < 2:
        raise ValueError(f"a decimation filter needs a factor >= 2, not {factor}")
    from scipy import signal  # type: ignore[import-untyped]  # heavy: only when someone decimates

    width = (1.0 - PASSBAND_FRACTION) / factor
    numtaps, beta = signal.kaiserord(STOPBAND_ATTENUATION_DB, width)
    numtaps = int(numtaps) | 1
    cutoff = (1.0 + PASSBAND_FRACTION) / 2 / factor
    taps: FloatArray = np.asarray(signal.firwin(numtaps, cutoff, window=("kaiser", beta)), dtype=np.float64)
    taps.setflags(write=False)
    return taps


@functools.cache
def _decimation_matrix(factor: int, outputs: int) -> FloatArray:
    """Maps ``taps - 1 + outputs * factor`` input samples to ``outputs`` decimated ones.

    Column ``j`` holds the reversed taps at rows ``j * factor`` onwards, so one
    matrix product computes only the kept outputs: ``taps`` multiply-adds per
    kept sample, in a single BLAS call instead of a Python loop.
    """
    reversed_taps = decimation_filter(factor)[::-1]
    memory = len(reversed_taps) - 1
    matrix = np.zeros((memory + outputs * factor, outputs), dtype=np.float64)
    for column in range(outputs):
        matrix[column * factor : column * factor + memory + 1, column] = reversed_taps
    matrix.setflags(write=False)
    return matrix


class Decimator:
    """Low-pass and keep every ``factor``-th sample of a (channels, block) stream, block by block."""

    def __init__(self, factor: int, block_size: int) -> None:
        if factor < 2 or block_size % factor:
            raise ValueError(f"cannot decimate blocks of {block_size} samples by {factor}")
        self.factor = factor
        self.block_size = block_size
        self.taps = decimation_filter(factor)
        self._memory = len(self.taps) - 1
        outputs = block_size // factor
        # Outputs per matrix product: all of a block's when the block is short (the usual
        # case: one call per tick); for long blocks, chunks spanning about two filter
        # lengths, so the matrix (mostly zeros beyond that) stays small.
        self._chunk = min(outputs, max(1, -(-len(self.taps) // factor)))
        self._matrix = _decimation_matrix(factor, self._chunk)
        self._history: FloatArray | None = None
        self._next_tick: int | None = None

    @property
    def group_delay(self) -> float:
        """The filter's delay in input samples (linear phase: constant)."""
        return self._memory / 2

    def reset(self) -> None:
        """Forget the past: the next block primes the state afresh."""
        self._history = None

    def process(self, block: npt.ArrayLike, tick: int | None = None) -> SampleArray:
        """Filter one (channels, block size) block; ``tick`` (if given) detects gaps to re-prime after."""
        samples = np.asarray(block)
        if samples.ndim != 2 or samples.shape[1] != self.block_size:
            raise ValueError(f"expected a block of {self.block_size} samples, got shape {samples.shape}")
        history = self._history
        if (
            history is None
            or history.shape[0] != samples.shape[0]
            or (tick is not None and tick != self._next_tick)
        ):
            history = np.repeat(samples[:, :1].astype(np.float64), self._memory, axis=1)
        buffer = np.concatenate((history, samples), axis=1, dtype=np.float64)
        factor, chunk, memory = self.factor, self._chunk, self._memory
        outputs = self.block_size // factor
        if outputs == chunk:
            result = buffer @ self._matrix
        else:
            result = np.empty((samples.shape[0], outputs), dtype=np.float64)
            for first in range(0, outputs, chunk):
                count = min(chunk, outputs - first)
                span = buffer[:, first * factor : first * factor + memory + count * factor]
                result[:, first : first + count] = span @ self._matrix[: memory + count * factor, :count]
        self._history = buffer[:, buffer.shape[1] - memory :]
        self._next_tick = None if tick is None else tick + 1
        return result.astype(np.float32)


class _SignalPlan:
    """One signal of a customization: which rows, and its decimator if any."""

    def __init__(self, custom: CustomSignal, num_channels: int, block_size: int) -> None:
        self.flag = custom.flag
        whole = custom.channels == tuple(range(num_channels))
        self.rows = None if whole else np.array(custom.channels, dtype=np.intp)
        factor = custom.downsampling_factor
        self.decimator = Decimator(factor, block_size) if factor > 1 else None

    def apply(self, block: SampleArray, tick: int) -> SampleArray:
        selected = block if self.rows is None else block[self.rows]
        if self.decimator is None:
            return selected
        return self.decimator.process(selected, tick)

    def missing(self) -> None:
        if self.decimator is not None:
            self.decimator.reset()


class CustomStream:
    """One customization of the stream, shared by every connection that asked for exactly it.

    A hub subscriber while it has targets: per tick it selects and decimates
    the blocks once (one filter state per signal, whoever listens), encodes its
    own body once, and delivers its own ``Tick`` to each target (a
    ``TCPDataProtocol`` or a unicast ``UDPDestination``), which adds its header
    and numbering as for the plain stream. One packet per tick, as for
    everybody (an empty one if none of its signals is present in that tick),
    so packet rate and numbering stay the master's.
    """

    def __init__(self, custom: CustomSignalInfo, server: MetaInfo, sample_order: str = "channel-major") -> None:
        self.custom = custom
        self.metainfo = custom.metainfo(server)
        self._targets = Subscribers()
        plans = []
        for wanted in custom.signals:
            signal = server.signal(wanted.flag)
            plans.append(_SignalPlan(wanted, signal.num_channels, signal.block_size))
        self._plans = sorted(plans, key=lambda plan: plan.flag)  # the wire order of the layout
        self.layout = BodyLayout(
            [SignalShape(s.flag, s.num_channels, s.block_size) for s in self.metainfo.signals], sample_order
        )

    def customize(self, tick: Tick) -> Tick:
        """This customization of ``tick``: the wanted channels, decimated, in a body of its own."""
        blocks: list[SampleArray | None] = []
        for plan in self._plans:
            block = tick.block(plan.flag)
            if block is None:
                plan.missing()
                blocks.append(None)
            else:
                blocks.append(plan.apply(block, tick.packet_id))
        present, body = self.layout.encode(blocks)
        return Tick(tick.packet_id, tick.timestamp, present, body, self.layout)

    @property
    def targets(self) -> tuple[Subscriber, ...]:
        return self._targets.members

    def deliver(self, ticks: Sequence[Tick]) -> None:
        self._targets.deliver([self.customize(tick) for tick in ticks])

    def add(self, target: Subscriber) -> None:
        self._targets.add(target)

    def remove(self, target: Subscriber) -> None:
        self._targets.remove(target)

    def __repr__(self) -> str:
        return f"<CustomStream {self.custom.describe()} for {len(self.targets)} connections>"


class CustomStreams:
    """The customized streams of one server: one per distinct customization, subscribed to the
    hub while at least one connection receives it."""

    def __init__(self, hub: StreamHub) -> None:
        self.hub = hub
        self._streams: dict[CustomSignalInfo, CustomStream] = {}

    def subscribe(self, custom: CustomSignalInfo, target: Subscriber) -> None:
        """``target`` receives the stream customized by ``custom`` from the next tick on."""
        stream = self._streams.get(custom)
        if stream is None:
            stream = self._streams[custom] = CustomStream(custom, self.hub.metainfo, self.hub.layout.sample_order)
        stream.add(target)
        self.hub.subscribe(stream)

    def unsubscribe(self, custom: CustomSignalInfo, target: Subscriber) -> None:
        stream = self._streams.get(custom)
        if stream is None:
            return
        stream.remove(target)
        if not stream.targets:
            self.hub.unsubscribe(stream)
            del self._streams[custom]

    def __len__(self) -> int:
        return len(self._streams)
