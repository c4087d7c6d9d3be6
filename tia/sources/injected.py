"""Events posted by other programs (``driver = injected``), fed by the ``[events]`` endpoint.

The source exists in the metainfo from the start (``channels = trigger:event``)
and is aperiodic: a packet carries it only when something was posted. Each
posted value is time-stamped on arrival by the packet it goes out in: the
next tick. At most one value per source goes out per tick, so a burst is
spread over consecutive packets, never dropped; only a queue of more than
``max_pending`` values refuses new ones (the poster is told ``ERROR``).

The line grammar (one line per event, ``\\n``-terminated) is parsed here,
sans IO, and served by ``tia.server.events``::

    7                 -> code 7 to the event source
    event 7           -> the same, naming the signal type
    button 1          -> value 1 to the injected button source (every channel)
    button 1 0 1      -> one value per channel
    markers 12        -> code 12 to the source [source:markers]
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np
from zope.interface import implementer

from tia.protocol.packet import SampleArray
from tia.sources.base import ISource, OptionError, SourceSpec

DEFAULT_MAX_PENDING = 1000
DEFAULT_EVENTS_PORT = 9100  # the port `tia event` posts to by default
MAX_LINE = 256


class EventRejected(ValueError):
    """A posted line that cannot go out; the text is sent back after ``ERROR``."""


def parse_max_pending(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1_000_000:
        raise ValueError("expected 1..1000000")
    return value


def parse_line(line: str) -> tuple[str | None, list[float]]:
    """``[TARGET] VALUE [VALUE ...]`` -> (target or None, values)."""
    words = line.split()
    if not words:
        raise EventRejected("empty line")
    target: str | None = None
    try:
        float(words[0])
    except ValueError:
        target, words = words[0], words[1:]
    if not words:
        raise EventRejected(f"no value after {target!r}")
    values = []
    for word in words:
        try:
            value = float(word)
        except ValueError:
            raise EventRejected(f"{word!r} is not a number") from None
        if not math.isfinite(value):
            raise EventRejected(f"{word!r} is not a finite number")
        values.append(value)
    return target, values


@implementer(ISource)
class InjectedEventSource:
    """An aperiodic source whose values come from ``inject`` (the events endpoint)."""

    device_clocked = False

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        if not spec.aperiodic:
            raise OptionError("channels", "an injected source carries an aperiodic type (event, button, keycode, ...)")
        self.max_pending = int(spec.options.get("max_pending", DEFAULT_MAX_PENDING))  # type: ignore[call-overload]
        self._pending: deque[SampleArray] = deque()
        self.accepted = 0
        self.sent = 0

    def start(self) -> None:
        self._pending.clear()

    def stop(self) -> None:
        pass

    def inject(self, values: Sequence[float]) -> None:
        """Queue one value for all channels, or one per channel (reactor thread)."""
        channels = len(self.spec.channels)
        if len(values) not in (1, channels):
            raise EventRejected(f"{self.spec.name} has {channels} channels: give 1 or {channels} values")
        if len(self._pending) >= self.max_pending:
            raise EventRejected(f"{self.spec.name}: {self.max_pending} values already waiting (max_pending)")
        column = np.empty((channels, 1), dtype=np.float32)
        column[:, 0] = values
        self._pending.append(column)
        self.accepted += 1

    def read(self, tick: int) -> SampleArray | None:
        if not self._pending:
            return None
        self.sent += 1
        return self._pending.popleft()


class EventRouter:
    """Finds the injected source a line is for: by source name, by signal type, or the event one."""

    def __init__(self, sources: Sequence[InjectedEventSource]) -> None:
        self.sources = list(sources)

    def post(self, line: str) -> InjectedEventSource:
        target, values = parse_line(line)
        source = self._find(target)
        source.inject(values)
        return source

    def _find(self, target: str | None) -> InjectedEventSource:
        if not self.sources:
            raise EventRejected("no injected source is configured")
        if target is None:
            for source in self.sources:
                if source.spec.channels[0].type.name == "event":
                    return source
            return self.sources[0]
        key = target.lower()
        for source in self.sources:
            if source.spec.name.lower() == key:
                return source
        for source in self.sources:
            kind = source.spec.channels[0].type
            if key == kind.name or key in kind.aliases:
                return source
        known = sorted({s.spec.name for s in self.sources} | {s.spec.channels[0].type.name for s in self.sources})
        raise EventRejected(f"no injected source or signal type {target!r} (known: {', '.join(known)})")
