"""Where samples come from: the source interface and the drivers that config names.

A driver declares the options it takes (name -> parser of the INI text), so
the config loader can reject an unknown key or a bad value with its file,
section and key before anything starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tia.sources.base import ISource, SourceSpec
from tia.sources.callback import CallbackSource, resolve_callable
from tia.sources.synthetic import WAVES, EventSource, SyntheticSource

OptionParser = Callable[[str], object]


def parse_number(text: str) -> float:
    return float(text)


def parse_numbers(text: str) -> list[float]:
    """One number, or several separated by commas or spaces (one per channel)."""
    items = text.replace(",", " ").split()
    if not items:
        raise ValueError("expected one or more numbers")
    return [float(item) for item in items]


def parse_int(text: str) -> int:
    return int(text)


@dataclass(frozen=True)
class Driver:
    """A source driver: how to build it and which options it accepts.

    ``periodic`` says which signal types it can feed: True only periodic,
    False only aperiodic, None both.
    """

    name: str
    factory: Callable[[SourceSpec], ISource]
    options: Mapping[str, OptionParser]
    periodic: bool | None = None
    description: str = ""


_WAVE_OPTIONS: dict[str, OptionParser] = {
    "frequency": parse_numbers,
    "amplitude": parse_numbers,
    "offset": parse_numbers,
}

DRIVERS: dict[str, Driver] = {
    "sine": Driver(
        "sine", SyntheticSource, {**_WAVE_OPTIONS, "phase": parse_numbers},
        description="amplitude * sin(2 pi frequency t + phase) + offset",
    ),
    "square": Driver(
        "square", SyntheticSource, {**_WAVE_OPTIONS, "duty": parse_numbers},
        description="offset + amplitude while the period's first duty fraction, else offset",
    ),
    "noise": Driver(
        "noise", SyntheticSource,
        {"amplitude": parse_numbers, "offset": parse_numbers, "seed": parse_int},
        description="seeded Gaussian noise: offset + amplitude * N(0, 1)",
    ),
    "ramp": Driver(
        "ramp", SyntheticSource, {},
        description="channel c (1-based), sample k: c * 1000 + k % 1000, exactly",
    ),
    "events": Driver(
        "events", EventSource, {"interval": parse_number, "codes": parse_numbers},
        periodic=False,
        description="event codes cycling through 'codes', one every 'interval' seconds",
    ),
    "callback": Driver(
        "callback", CallbackSource, {"callable": resolve_callable, "argument": str},
        description="values returned by a Python callable 'package.module:function'",
    ),
}
assert set(WAVES) <= set(DRIVERS)


def build_source(spec: SourceSpec) -> ISource:
    """The source a spec describes, from its driver."""
    return DRIVERS[spec.driver].factory(spec)


__all__ = ["DRIVERS", "Driver", "ISource", "SourceSpec", "build_source"]
