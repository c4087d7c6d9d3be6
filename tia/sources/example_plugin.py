"""The minimal third-party driver of README.rst, shipped as a working example.

A plugin package needs only a ``Driver`` and one entry point; txtia declares
this one through its own ``tia.sources`` entry point (``counter``), exactly
as a separate distribution would in its pyproject.toml::

    [project.entry-points."tia.sources"]
    counter = "tia.sources.example_plugin:DRIVER"

so ``etc/examples/plugin.ini`` runs as is. Sample ``k`` (since server start)
of every channel is ``k * step`` (exact in float32 up to 2**24).
"""

from __future__ import annotations

import numpy as np
from zope.interface import implementer

from tia.protocol.packet import SampleArray
from tia.sources import Driver
from tia.sources.base import ISource, SourceSpec


@implementer(ISource)
class CounterSource:
    device_clocked = False

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.step = float(spec.options.get("step", 1.0))  # type: ignore[arg-type]

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def read(self, tick: int) -> SampleArray | None:
        size = self.spec.block_size
        row = np.arange(tick * size, (tick + 1) * size, dtype=np.float64) * self.step
        return np.tile(row.astype(np.float32), (len(self.spec.channels), 1))


DRIVER = Driver("counter", CounterSource, {"step": float}, periodic=True,
                description="sample k of every channel is k * step")
