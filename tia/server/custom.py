"""The DSP half of custom signal info: channel selection and anti-aliased decimation per connection.

Only connections that asked for a customization pay for it. The hub still
encodes each tick once for everybody else; a ``CustomSubscriber`` sits between
the hub and one client's real subscriber (``TCPDataProtocol`` or a unicast
``UDPDestination``), reads the tick's raw blocks from ``hub.current_blocks``
(nothing is decoded), selects and decimates them, encodes its own body and
hands it on. The real subscriber still adds its own header and numbering.

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
state (the last ``taps - 1`` input samples per channel) is kept per connection
and signal, so blocks join seamlessly; at the start, and after a gap in the
ticks (Stop then Start), it is primed with the first sample, as if the signal
had been constant before, which avoids a start-up ramp from zero.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from tia.protocol.custom import CustomSignal, CustomSignalInfo
from tia.protocol.metainfo import MetaInfo
from tia.protocol.packet import SampleArray, encode_body
from tia.server.stream import HoldingSubscriber

if TYPE_CHECKING:
    from tia.server.stream import Subscriber

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
    """One signal of one customized connection: which rows, and its decimator if any."""

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


class BlockSource(Protocol):
    """What a custom subscriber reads: the blocks of the tick being sent (the ``StreamHub``)."""

    @property
    def current_blocks(self) -> Sequence[tuple[int, SampleArray]]: ...


class CustomSubscriber:
    """Wraps one client's subscriber and sends it the customized stream instead of the shared body.

    One packet per tick, as for everybody (an empty one if none of its signals
    is present in that tick), so its packet rate and numbering stay the master's.
    """

    def __init__(
        self, hub: BlockSource, custom: CustomSignalInfo, server: MetaInfo, target: Subscriber
    ) -> None:
        self.hub = hub
        self.custom = custom
        self.target = target
        self._plans = []
        for wanted in custom.signals:
            signal = server.signal(wanted.flag)
            self._plans.append(_SignalPlan(wanted, signal.num_channels, signal.block_size))

    def send_tick(self, flags: int, body: bytes, packet_id: int, timestamp: int) -> None:
        present = dict(self.hub.current_blocks)
        blocks: list[tuple[int, SampleArray]] = []
        for plan in self._plans:
            block = present.get(plan.flag)
            if block is None:
                plan.missing()
            else:
                blocks.append((plan.flag, plan.apply(block, packet_id)))
        custom_flags, custom_body = encode_body(blocks)
        self.target.send_tick(custom_flags, custom_body, packet_id, timestamp)

    def hold(self) -> None:
        if isinstance(self.target, HoldingSubscriber):
            self.target.hold()

    def release(self) -> None:
        if isinstance(self.target, HoldingSubscriber):
            self.target.release()

    def __repr__(self) -> str:
        return f"<CustomSubscriber {self.custom.describe()} for {self.target!r}>"
