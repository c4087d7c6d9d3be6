"""A source fed by a Python callable: the seed's ``TiASignalConfig(callback=...)`` model.

The callable is polled on the reactor thread once per master tick, so it must
return quickly: a flat channel-major list (ch1 s1..sB, ch2 s1..sB, ...) or a
(channels, block size) array; ``None`` from an aperiodic source means no change.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from zope.interface import implementer

from tia.protocol.packet import SampleArray
from tia.sources.base import ISource, SourceError, SourceSpec, as_block

SampleCallback = Callable[[object], object]


def resolve_callable(reference: str) -> SampleCallback:
    """Import ``package.module:attribute``; ``ValueError`` says what is wrong."""
    module_name, colon, attribute = reference.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"{reference!r} is not of the form package.module:function")
    try:
        target: object = importlib.import_module(module_name.strip())
    except ImportError as error:
        raise ValueError(f"cannot import {module_name!r}: {error}") from None
    for part in attribute.strip().split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise ValueError(f"{reference!r} is not callable")
    return target  # type: ignore[return-value]


@implementer(ISource)
class CallbackSource:
    device_clocked = False

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        function = spec.options.get("callable")
        if not callable(function):
            raise SourceError(f"source [{spec.name}] needs a callable, got {function!r}")
        self._function: SampleCallback = function
        self._argument = spec.options.get("argument", spec.name)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def read(self, tick: int) -> SampleArray | None:
        values = self._function(self._argument)
        if values is None and self.spec.aperiodic:
            return None
        return as_block(self.spec, values)
