"""[source:NAME] sections and ``--signal``: where samples come from.

A driver checks its own options (``tia.sources``); this module checks what
every source shares (rate, block size, channels and their types) and asks the
driver what a file or device has, so a wrong section fails at load time with
its key named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

from tia.config.extras import missing_extra
from tia.config.reader import ConfigError, Section, format_rate
from tia.protocol.signals import SignalType, UnknownSignalType, by_name
from tia.sources import DRIVERS, Driver, find_driver, parse_path
from tia.sources.base import (
    ON_ERROR_POLICIES,
    ChannelSpec,
    OptionError,
    SourceDescription,
    SourceError,
    SourceSpec,
)
from tia.sources.plugins import PluginError
from tia.sources.synthetic import WAVES, aperiodic_default

SOURCE_PREFIX = "source:"
GENERIC_SOURCE_KEYS = ("driver", "type", "channels", "rate", "blocksize", "on_error")
# drivers whose library is an extra: (module, package, extra); checked when a section names the driver
DRIVER_EXTRAS = {
    "lsl": ("pylsl", "pylsl", "sources"),
    "brainflow": ("brainflow.board_shim", "brainflow", "sources"),
}
SIGNAL_FORMS = "TYPE:CHANNELS:RATE:BLOCKSIZE[:WAVE] (aperiodic types: TYPE:CHANNELS or TYPE:CHANNELS:0:0[:WAVE])"


def _parse_rate(section: Section, key: str) -> Fraction:
    text = section.required(key, "a sampling rate in Hz, e.g. 512")
    try:
        rate = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise section.error(key, f"{text!r} is not a number") from None
    if rate <= 0:
        raise section.error(key, f"{text!r} must be positive")
    return rate


def _parse_channels(section: Section, default_type: str | None) -> tuple[ChannelSpec, ...]:
    text = section.required(
        "channels", "a channel count (e.g. 16) or labels (e.g. Fp1, Fp2, HEOG:eog)"
    )
    type_name = default_type
    if text.isdigit():
        count = int(text)
        if not 1 <= count <= 0xFFFF:
            raise section.error("channels", f"{count} is out of range 1..65535")
        if type_name is None:
            raise section.error("type", "missing; expected the TiA signal type of the channels")
        try:
            signal_type = by_name(type_name)
        except UnknownSignalType as error:
            raise section.error("type", str(error)) from None
        return tuple(ChannelSpec(f"{signal_type.name}{n}", signal_type) for n in range(1, count + 1))

    channels = []
    for item in text.split(","):
        label, colon, channel_type = item.strip().rpartition(":")
        if not colon:
            label, channel_type = channel_type, ""
        label, channel_type = label.strip(), channel_type.strip()
        if not label:
            raise section.error("channels", f"empty channel label in {text!r}")
        chosen = channel_type or type_name
        if not chosen:
            raise section.error(
                "type", f"missing; channel {label!r} has no type (write {label}:eeg or set type)"
            )
        try:
            signal_type = by_name(chosen)
        except UnknownSignalType as error:
            key = "channels" if channel_type else "type"
            raise section.error(key, str(error)) from None
        channels.append(ChannelSpec(label, signal_type))
    if len(channels) > 0xFFFF:
        raise section.error("channels", "more than 65535 channels")
    return tuple(channels)


def parse_source(section: Section) -> SourceSpec:
    name = section.name[len(SOURCE_PREFIX):].strip()
    if not name:
        raise section.error(None, "a source section needs a name: [source:NAME]")
    driver_name = section.required("driver", f"one of {', '.join(DRIVERS)}")
    try:
        driver = find_driver(driver_name)
    except PluginError as error:
        raise section.error("driver", str(error)) from None
    if driver is None:
        raise section.error(
            "driver", f"unknown driver {driver_name!r}; known: {', '.join(DRIVERS)} (or a tia.sources entry point)"
        )
    if driver_name in DRIVER_EXTRAS:
        module, package, extra = DRIVER_EXTRAS[driver_name]
        missing = missing_extra(module, f"the {driver_name} driver", extra, package)
        if missing is not None:
            raise section.error("driver", missing)
    type_text = section.text("type")
    listed = _parse_channels(section, type_text) if section.has("channels") or driver.describe is None else None
    options = _parse_options(section, driver, driver_name)
    described_rate: Fraction | None = None
    if driver.describe is not None:
        described = _describe(section, driver, options, listed, type_text)
        channels, described_rate = described.channels, described.sampling_rate
    else:
        assert listed is not None
        channels = listed
    aperiodic = {c.type.aperiodic for c in channels}
    if len(aperiodic) > 1 or (True in aperiodic and len({c.type for c in channels}) > 1):
        raise section.error(
            "channels",
            "an aperiodic type (button, axis, keycode, mouse-button, event) must be the only "
            "type of its source; put periodic and aperiodic channels in separate sources",
        )
    is_aperiodic = aperiodic == {True}
    if driver.periodic is True and is_aperiodic:
        raise section.error("driver", f"driver {driver_name!r} only feeds periodic signal types")
    if driver.periodic is False and not is_aperiodic:
        raise section.error(
            "driver", f"driver {driver_name!r} only feeds aperiodic types (button, axis, keycode, event)"
        )

    if is_aperiodic:
        # polled once per master tick; rate and block size are the packet grid's
        for key in ("rate", "blocksize"):
            if section.text(key):
                raise section.error(key, "aperiodic sources are polled once per packet; remove it")
        rate = Fraction(1)  # replaced by the packet rate once the master is known
        block_size = 1
    elif described_rate is not None and not section.text("rate"):
        rate = described_rate  # the file's or device's own rate
        block_size = section.integer("blocksize", 1, 1, 0xFFFF)
    else:
        rate = _parse_rate(section, "rate")
        if described_rate is not None and rate != described_rate:
            raise section.error(
                "rate", f"{format_rate(rate)} Hz, but the {driver_name} source runs at "
                f"{format_rate(described_rate)} Hz (nothing is resampled); remove rate, it comes from the file "
                "or device"
            )
        block_size = section.integer("blocksize", 1, 1, 0xFFFF)

    on_error = section.choice("on_error", "stop-signal", ON_ERROR_POLICIES)
    spec = SourceSpec(name, driver_name, rate, block_size, channels, options, on_error)
    try:
        driver.factory(spec)  # drivers check their options (count per channel...) when built
    except OptionError as error:
        raise section.error(error.key, str(error)) from None
    except Exception as error:
        raise section.error(None, f"driver {driver_name!r} rejects this source: {error}") from None
    return spec


def _parse_options(section: Section, driver: Driver, driver_name: str) -> dict[str, object]:
    """The driver's own keys, each through its parser; a path is relative to the INI file."""
    options: dict[str, object] = {}
    for key in section.remaining():
        if key in GENERIC_SOURCE_KEYS:
            continue
        parser = driver.options.get(key)
        if parser is None:
            known = ", ".join(sorted(driver.options)) or "none"
            raise section.error(key, f"unknown key for driver {driver_name!r} (its options: {known})")
        text = section.text(key) or ""
        try:
            value = parser(text)
        except (ValueError, SourceError) as error:
            raise section.error(key, f"invalid value {text!r}: {error}") from None
        if parser is parse_path and isinstance(value, Path) and not value.is_absolute() and section.path:
            value = Path(section.path).parent / value
        options[key] = value
    return options


def _describe(
    section: Section, driver: Driver, options: dict[str, object],
    listed: tuple[ChannelSpec, ...] | None, type_text: str | None,
) -> SourceDescription:
    """Ask the driver what its file or device has (rate, channels), naming the key at fault."""
    assert driver.describe is not None
    default_type: SignalType | None = None
    if type_text:
        try:
            default_type = by_name(type_text)
        except UnknownSignalType as error:
            raise section.error("type", str(error)) from None
    try:
        return driver.describe(options, listed, default_type)
    except OptionError as error:
        raise section.error(error.key, str(error)) from None
    except (ValueError, OSError, SourceError) as error:
        raise section.error(None, f"driver {driver.name!r}: {error}") from None



def with_aperiodic_rates(specs: Sequence[SourceSpec]) -> list[SourceSpec]:
    """Aperiodic sources are polled once per packet: their rate is the packet rate."""
    periodic = [s for s in specs if not s.aperiodic]
    if not periodic:
        return list(specs)
    rate = periodic[0].packet_rate
    return [replace(s, sampling_rate=rate, block_size=1) if s.aperiodic else s for s in specs]


def sources_from_signal_options(values: Sequence[str]) -> tuple[SourceSpec, ...]:
    """Synthetic sources from ``--signal`` values (``SIGNAL_FORMS``); the first is the master.

    An aperiodic type takes the packet grid: its RATE:BLOCKSIZE is left out,
    written ``0:0``, or the grid itself (``32:1`` at 32 packets/s). Without a
    WAVE it gets ``aperiodic_default``: only sent when something happens.
    """
    specs: list[SourceSpec] = []
    written: list[tuple[Fraction, int] | None] = []  # an aperiodic signal's RATE:BLOCKSIZE, unless 0:0
    for index, value in enumerate(values, start=1):
        spec, grid = _signal_source(index, value)
        specs.append(spec)
        written.append(grid)
    if specs and specs[0].aperiodic:
        raise ConfigError(f"{specs[0].channels[0].type.name} is aperiodic; the first --signal is the master "
                          "and sets the packet rate: start with a periodic one", key=_signal_key(1, values[0]))
    master_rate = specs[0].packet_rate if specs else Fraction(0)
    fed: dict[str, tuple[int, SourceSpec]] = {}  # signal type -> the first --signal feeding it
    for index, (spec, grid) in enumerate(zip(specs, written, strict=True), start=1):
        key, name = _signal_key(index, values[index - 1]), spec.channels[0].type.name
        if grid is not None and grid != (master_rate, 1):
            raise ConfigError(
                f"{name} is aperiodic and sent at most once per packet, at the packet grid "
                f"({format_rate(master_rate)}:1): write {name}:{len(spec.channels)} "
                f"or {name}:{len(spec.channels)}:0:0", key=key,
            )
        if not spec.aperiodic and spec.packet_rate != master_rate:
            raise ConfigError(
                f"RATE / BLOCKSIZE = {format_rate(spec.packet_rate)} packets/s, but the first --signal (the "
                f"master) sends {format_rate(master_rate)} packets/s: every periodic signal covers the same "
                "time per packet", key=key,
            )
        first, other = fed.setdefault(name, (index, spec))
        if other is not spec and (spec.aperiodic or (other.packet_rate, other.block_size)
                                  != (spec.packet_rate, spec.block_size)):
            raise ConfigError(f"{name} is also --signal #{first}: one signal type has one rate and block size "
                              "(and an aperiodic one one --signal); give one --signal more CHANNELS", key=key)
    return tuple(with_aperiodic_rates(specs))


def _signal_key(index: int, value: str) -> str:
    """How an error names a ``--signal``: its position and what the user wrote."""
    return f"--signal #{index} {value!r}"


def _signal_source(index: int, value: str) -> tuple[SourceSpec, tuple[Fraction, int] | None]:
    """One ``--signal``'s source, and the RATE:BLOCKSIZE written for an aperiodic type (None: the grid)."""
    key = _signal_key(index, value)
    parts = value.split(":")
    try:
        signal_type = by_name(parts[0])
    except UnknownSignalType as error:
        raise ConfigError(str(error), key=key) from None
    forms = (2, 4, 5) if signal_type.aperiodic else (4, 5)
    if len(parts) not in forms:
        raise ConfigError(f"expected {SIGNAL_FORMS}", key=key)
    wave = parts[4] if len(parts) == 5 else None
    if wave is not None and wave not in WAVES:
        raise ConfigError(f"WAVE {wave!r} is not one of {', '.join(WAVES)}", key=key)
    count = _whole(parts[1], "CHANNELS", "a number of channels", key)
    rate_text, block_text = parts[2:4] if len(parts) > 2 else ("0", "0")
    try:
        rate = Fraction(rate_text)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"RATE {rate_text!r} is not a sampling rate in Hz", key=key) from None
    grid: tuple[Fraction, int] | None = None
    if signal_type.aperiodic:
        if (rate_text, block_text) != ("0", "0"):
            grid = (rate, _whole(block_text, "BLOCKSIZE", "a number of samples per packet", key))
        rate, block = Fraction(1), 1  # replaced by the packet rate once the master is known
    else:
        if rate <= 0:
            raise ConfigError(f"RATE {rate_text!r} must be positive", key=key)
        block = _whole(block_text, "BLOCKSIZE", "a number of samples per packet", key)
    driver, options = _signal_driver(signal_type, count, wave)
    channels = tuple(ChannelSpec(f"{signal_type.name}{n}", signal_type) for n in range(1, count + 1))
    return SourceSpec(f"signal{index}", driver, rate, block, channels, options), grid


def _whole(text: str, field: str, meaning: str, key: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if not 1 <= number <= 0xFFFF:
        raise ConfigError(f"{field} {text!r} is not {meaning} (1..65535)", key=key)
    return number


def _signal_driver(signal_type: SignalType, count: int, wave: str | None) -> tuple[str, dict[str, object]]:
    if wave is not None:
        return wave, {}
    if signal_type.aperiodic:
        return aperiodic_default(signal_type, count)
    return "sine", {}
