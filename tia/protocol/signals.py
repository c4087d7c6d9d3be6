"""TiA signal types: flags, the names we send, and the aliases we accept.

We send the names the reference client understands and accept every variant
the known peers emit (SPEC section 3).
"""

from __future__ import annotations

from dataclasses import dataclass


class UnknownSignalType(ValueError):
    """A signal type name or flag that TiA 1.0 does not define."""


@dataclass(frozen=True)
class SignalType:
    """One TiA signal type: its flag bit, the name we send, and how it is sampled."""

    flag: int
    name: str
    aliases: tuple[str, ...] = ()
    aperiodic: bool = False


SIGNAL_TYPES: tuple[SignalType, ...] = (
    SignalType(0x000001, "eeg"),
    SignalType(0x000002, "emg"),
    SignalType(0x000004, "eog"),
    SignalType(0x000008, "ecg"),
    SignalType(0x000010, "hr"),
    SignalType(0x000020, "bp"),
    SignalType(0x000040, "button", ("buttons",), aperiodic=True),
    SignalType(0x000080, "axis", ("joystick", "axes"), aperiodic=True),
    SignalType(0x000100, "sensor", ("sensors",)),
    SignalType(0x000200, "nirs"),
    SignalType(0x000400, "fmri"),
    SignalType(0x000800, "keycode", ("mouse",), aperiodic=True),
    SignalType(0x001000, "mouse-button", ("mousebutton",), aperiodic=True),
    SignalType(0x010000, "user1", ("user_1",)),
    SignalType(0x020000, "user2", ("user_2",)),
    SignalType(0x040000, "user3", ("user_3",)),
    SignalType(0x080000, "user4", ("user_4",)),
    SignalType(0x100000, "undefined"),
    SignalType(0x200000, "event", aperiodic=True),
)

ALL_FLAGS: int = 0
for _signal_type in SIGNAL_TYPES:
    ALL_FLAGS |= _signal_type.flag

_BY_FLAG: dict[int, SignalType] = {t.flag: t for t in SIGNAL_TYPES}
_BY_NAME: dict[str, SignalType] = {}
for _signal_type in SIGNAL_TYPES:
    for _name in (_signal_type.name, *_signal_type.aliases):
        _BY_NAME[_name.lower()] = _signal_type


def by_name(name: str) -> SignalType:
    """Look up a signal type by its sent name or an accepted alias, ignoring case."""
    try:
        return _BY_NAME[name.strip().lower()]
    except KeyError:
        known = ", ".join(t.name for t in SIGNAL_TYPES)
        raise UnknownSignalType(
            f"unknown signal type {name!r} (known: {known})"
        ) from None


def by_flag(flag: int) -> SignalType:
    """Look up a signal type by its single flag bit."""
    try:
        return _BY_FLAG[flag]
    except KeyError:
        raise UnknownSignalType(f"unknown signal type flag 0x{flag:06x}") from None


def flags_in(flags: int) -> list[int]:
    """The single-bit flags set in ``flags``, in ascending order (the wire order)."""
    if flags < 0:
        # A negative int has infinitely many bits set: the loop would not end.
        raise ValueError(f"signal flags must not be negative, got {flags}")
    result = []
    remaining = flags
    while remaining:
        lowest = remaining & -remaining
        result.append(lowest)
        remaining ^= lowest
    return result
