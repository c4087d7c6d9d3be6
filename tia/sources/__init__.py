"""Where samples come from: the source interface and the drivers that config names.

A driver declares the options it takes (name -> parser of the INI text), so
the config loader can reject an unknown key or a bad value with its file,
section and key before anything starts. A driver that can learn its rate and
channels from a file or device at config time has a ``describe`` hook.
Third-party drivers come from the ``tia.sources`` entry point group
(``tia.sources.plugins``), looked up by ``find_driver``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tia.protocol.signals import SignalType
from tia.sources import brainflow_board, lsl, replay
from tia.sources.base import ChannelSpec, ISource, SourceDescription, SourceSpec
from tia.sources.callback import CallbackSource, resolve_callable
from tia.sources.device import DEVICE_OPTIONS, ProducerSource
from tia.sources.injected import InjectedEventSource, parse_max_pending
from tia.sources.synthetic import WAVES, EventSource, SyntheticSource

OptionParser = Callable[[str], object]
Describe = Callable[[Mapping[str, object], "tuple[ChannelSpec, ...] | None", "SignalType | None"], SourceDescription]


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


def parse_path(text: str) -> Path:
    """A file path; config resolves a relative one against the INI file's directory."""
    if not text.strip():
        raise ValueError("expected a file path")
    return Path(text.strip()).expanduser()


@dataclass(frozen=True)
class Driver:
    """A source driver: how to build it and which options it accepts.

    ``periodic`` says which signal types it can feed: True only periodic,
    False only aperiodic, None both. ``describe(options, channels or None,
    type or None)`` gives the rate and channels a file or device has, so the
    section may leave out ``rate`` and ``channels``.
    """

    name: str
    factory: Callable[[SourceSpec], ISource]
    options: Mapping[str, OptionParser]
    periodic: bool | None = None
    description: str = ""
    describe: Describe | None = None


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
    "replay": Driver(
        "replay", replay.ReplaySource,
        {"file": parse_path, "format": replay.parse_format, "speed": replay.parse_speed,
         "on_end": replay.parse_on_end, "delimiter": replay.parse_delimiter, "codes": replay.parse_codes},
        describe=replay.describe,
        description="EDF/EDF+/BDF/BDF+, CSV or NumPy file replayed in real time; annotations on an event type",
    ),
    "lsl": Driver(
        "lsl", lsl.LSLSource,
        {"stream_name": lsl.parse_lsl_text, "stream_type": lsl.parse_lsl_text, "source_id": lsl.parse_lsl_text,
         **DEVICE_OPTIONS},
        description="a Lab Streaming Layer stream resolved by name, type and/or source id",
    ),
    "brainflow": Driver(
        "brainflow", brainflow_board.BrainFlowSource,
        {"board_id": brainflow_board.parse_board_id, "exg": brainflow_board.parse_exg,
         "accel": brainflow_board.parse_sensor, "gyro": brainflow_board.parse_sensor,
         **{key: kind for key, kind in brainflow_board.PARAMS.items()}, **DEVICE_OPTIONS},
        periodic=True, describe=brainflow_board.describe,
        description="a BrainFlow board (BoardShim board id; -1 is the synthetic board)",
    ),
    "producer": Driver(
        "producer", ProducerSource, {"callable": resolve_callable, **DEVICE_OPTIONS},
        description="samples pushed at its own pace by a Python callable run in a thread",
    ),
    "injected": Driver(
        "injected", InjectedEventSource, {"max_pending": parse_max_pending},
        periodic=False,
        description="values posted to the [events] endpoint (tia event CODE)",
    ),
}
assert set(WAVES) <= set(DRIVERS)


def find_driver(name: str) -> Driver | None:
    """A built-in driver, else one from a ``tia.sources`` entry point (then kept in DRIVERS).

    Raises ``tia.sources.plugins.PluginError`` naming the entry point if it is broken.
    """
    driver = DRIVERS.get(name)
    if driver is None:
        from tia.sources.plugins import load_plugin

        driver = load_plugin(name)
        if driver is not None:
            DRIVERS[name] = driver
    return driver


def build_source(spec: SourceSpec) -> ISource:
    """The source a spec describes, from its driver."""
    driver = find_driver(spec.driver)
    if driver is None:
        raise KeyError(f"source [{spec.name}]: unknown driver {spec.driver!r}")
    return driver.factory(spec)


__all__ = ["DRIVERS", "Driver", "ISource", "SourceSpec", "build_source", "find_driver"]
