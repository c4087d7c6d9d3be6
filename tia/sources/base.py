"""What a sample source is, and the description the server builds it from.

The master clock asks every source for the block of master tick ``t`` (tick
0 is the server's first packet). A periodic source answers with a
(channels, block size) array of samples ``t * blocksize`` to
``(t + 1) * blocksize - 1`` at its own rate; an aperiodic source answers with
a (channels, 1) array when its value changed, else ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from zope.interface import Attribute, Interface

from tia.protocol.packet import SampleArray
from tia.protocol.signals import SignalType

ON_ERROR_POLICIES = ("stop-signal", "zero-fill", "stop-server")


class SourceError(Exception):
    """A source could not deliver; the message names the source."""


class SourceFinished(Exception):
    """Raised from ``read`` when a source has no more data (a replayed file ended).

    Not a failure: the hub logs it, stops the source's signals and, with
    ``stop_server``, stops the server gracefully (state clients hear
    ``ServerStateShutdown``).
    """

    def __init__(self, message: str, stop_server: bool = False) -> None:
        super().__init__(message)
        self.stop_server = stop_server


class OptionError(ValueError):
    """A driver rejects one of its options; ``key`` lets the config error name it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class ChannelSpec:
    label: str
    type: SignalType


@dataclass(frozen=True)
class SourceSpec:
    """A configured source: where its channels go, at which rate, and its driver's options."""

    name: str
    driver: str
    sampling_rate: Fraction
    block_size: int
    channels: tuple[ChannelSpec, ...]
    options: Mapping[str, object] = field(default_factory=dict)
    on_error: str = "stop-signal"

    @property
    def aperiodic(self) -> bool:
        return self.channels[0].type.aperiodic

    @property
    def packet_rate(self) -> Fraction:
        return self.sampling_rate / self.block_size


@dataclass(frozen=True)
class SourceDescription:
    """What a driver learns from its file or device at config time (rate None: not known)."""

    sampling_rate: Fraction | None
    channels: tuple[ChannelSpec, ...]


class ISource(Interface):
    """A provider of samples, polled once per master tick on the reactor thread."""

    spec = Attribute("The SourceSpec this source was built from.")
    device_clocked = Attribute(
        "False for a source that computes or reads each block when asked (synthetic waves, files, "
        "callbacks). True for one fed at its device's own pace through a buffer: it also provides "
        "IDeviceClockedSource, and its read() may return None on a periodic signal when no complete "
        "block is buffered yet (the signal is absent from that packet, never invented)."
    )

    def start() -> None:
        """Acquire what the source needs (device, file); raise SourceError if it cannot."""

    def stop() -> None:
        """Release it. Called once, also after a failure."""

    def read(tick: int) -> SampleArray | None:
        """The block of master tick ``tick``: (channels, block size) float32 samples,
        or ``None`` for an aperiodic source whose value did not change (or for a
        periodic source with ``device_clocked = True`` that has no complete block
        yet). Raises ``SourceFinished`` at the end of its data."""


class IDeviceClockedSource(ISource):
    """A source with ``device_clocked = True`` (``tia.sources.device.DeviceSource``)."""

    def metrics() -> dict[str, float | int | bool | None]:
        """Its buffer's counters: ``dropped`` (samples discarded beyond ``max_latency``),
        ``rate_error_ppm`` (measured rate against the nominal one, None until known), ..."""


class BlockShapeError(SourceError):
    """A source delivered a block of the wrong size."""


def as_block(spec: SourceSpec, values: object) -> SampleArray:
    """Coerce what a source returned into its (channels, block size) float32 block."""
    array = np.asarray(values, dtype=np.float32)
    shape = (len(spec.channels), spec.block_size)
    if array.shape == shape:
        return array
    if array.ndim == 1 and array.size == shape[0] * shape[1]:
        return array.reshape(shape)
    raise BlockShapeError(
        f"source [{spec.name}] delivered values of shape {array.shape}, expected "
        f"{shape[0]} channels x {shape[1]} samples (flat channel-major or 2-D)"
    )
