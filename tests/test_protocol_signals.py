"""Signal types: the SPEC section 3 table, name/alias lookup, flag order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tia.protocol.signals import (
    ALL_FLAGS,
    SIGNAL_TYPES,
    SignalType,
    UnknownSignalType,
    by_flag,
    by_name,
    flags_in,
)

# SPEC section 3, row by row: (flag, name we send, aliases we also accept).
SPEC_TABLE: list[tuple[int, str, tuple[str, ...]]] = [
    (0x000001, "eeg", ()),
    (0x000002, "emg", ()),
    (0x000004, "eog", ()),
    (0x000008, "ecg", ()),
    (0x000010, "hr", ()),
    (0x000020, "bp", ()),
    (0x000040, "button", ("buttons",)),
    (0x000080, "axis", ("joystick", "axes")),
    (0x000100, "sensor", ("sensors",)),
    (0x000200, "nirs", ()),
    (0x000400, "fmri", ()),
    (0x000800, "keycode", ("mouse",)),
    (0x001000, "mouse-button", ("mousebutton",)),
    (0x010000, "user1", ("user_1",)),
    (0x020000, "user2", ("user_2",)),
    (0x040000, "user3", ("user_3",)),
    (0x080000, "user4", ("user_4",)),
    (0x100000, "undefined", ()),
    (0x200000, "event", ()),
]

APERIODIC_NAMES = {"button", "axis", "keycode", "mouse-button", "event"}

ALL_ACCEPTED_NAMES = [(name, flag) for flag, sent, aliases in SPEC_TABLE for name in (sent, *aliases)]


def test_table_is_exactly_the_spec_table() -> None:
    assert [(t.flag, t.name, t.aliases) for t in SIGNAL_TYPES] == SPEC_TABLE


@pytest.mark.parametrize(("flag", "name", "aliases"), SPEC_TABLE, ids=[r[1] for r in SPEC_TABLE])
def test_every_row_by_flag(flag: int, name: str, aliases: tuple[str, ...]) -> None:
    signal_type = by_flag(flag)
    assert isinstance(signal_type, SignalType)
    assert signal_type.flag == flag
    assert signal_type.name == name
    assert signal_type.aliases == aliases
    assert signal_type.aperiodic == (name in APERIODIC_NAMES)


@pytest.mark.parametrize(("name", "flag"), ALL_ACCEPTED_NAMES, ids=[n for n, _ in ALL_ACCEPTED_NAMES])
def test_every_name_and_alias_by_name(name: str, flag: int) -> None:
    signal_type = by_name(name)
    assert signal_type.flag == flag
    # Aliases resolve to the type, whose name is the one we send.
    assert signal_type is by_flag(flag)


@pytest.mark.parametrize(("name", "flag"), ALL_ACCEPTED_NAMES, ids=[n for n, _ in ALL_ACCEPTED_NAMES])
def test_names_are_case_insensitive(name: str, flag: int) -> None:
    assert by_name(name.upper()).flag == flag
    assert by_name(name.title()).flag == flag
    swapped = "".join(c.upper() if i % 2 else c for i, c in enumerate(name))
    assert by_name(swapped).flag == flag


def test_names_are_trimmed() -> None:
    assert by_name(" eeg ").flag == 0x1
    assert by_name("\tEEG\n").flag == 0x1


def test_sent_names_are_lowercase_and_unique() -> None:
    names = [t.name for t in SIGNAL_TYPES]
    assert all(name == name.lower() for name in names)
    every = [n.lower() for t in SIGNAL_TYPES for n in (t.name, *t.aliases)]
    assert len(every) == len(set(every))


def test_aperiodic_set() -> None:
    assert {t.name for t in SIGNAL_TYPES if t.aperiodic} == APERIODIC_NAMES
    assert {t.flag for t in SIGNAL_TYPES if t.aperiodic} == {
        0x40,
        0x80,
        0x800,
        0x1000,
        0x200000,
    }


def test_flags_are_single_distinct_bits_and_all_flags() -> None:
    flags = [t.flag for t in SIGNAL_TYPES]
    assert all(f > 0 and f & (f - 1) == 0 for f in flags)
    assert len(set(flags)) == len(flags)
    assert flags == sorted(flags)
    combined = 0
    for flag in flags:
        combined |= flag
    assert combined == ALL_FLAGS == 0x3F1FFF


def test_signal_type_is_frozen() -> None:
    signal_type = by_name("eeg")
    with pytest.raises(AttributeError):
        signal_type.name = "x"  # type: ignore[misc]  # frozen: what is under test


@pytest.mark.parametrize(
    "name",
    [
        "",
        " ",
        "eeg1",
        "EEG 2",
        "user5",
        "user_5",
        "user0",
        "mouse_button",
        "buttonss",
        "e e g",
        "ée",
    ],
)
def test_unknown_names_raise(name: str) -> None:
    with pytest.raises(UnknownSignalType) as info:
        by_name(name)
    assert isinstance(info.value, ValueError)
    # The message helps: it lists what is known.
    assert "eeg" in str(info.value)


@pytest.mark.parametrize("flag", [0, -1, 0x3, 0x2000, 0x4000, 0x8000, 0x400000, 0x800000, 1 << 31, 1 << 40, ALL_FLAGS])
def test_unknown_flags_raise(flag: int) -> None:
    with pytest.raises(UnknownSignalType):
        by_flag(flag)


def test_flags_in_examples() -> None:
    assert flags_in(0) == []
    assert flags_in(0x1) == [0x1]
    assert flags_in(0x21) == [0x1, 0x20]
    assert flags_in(0x200041) == [0x1, 0x40, 0x200000]
    assert flags_in(ALL_FLAGS) == [t.flag for t in SIGNAL_TYPES]
    # flags_in only splits bits; it does not judge whether TiA knows them.
    assert flags_in(0x2000 | 0x80000000) == [0x2000, 0x80000000]


def test_flags_in_rejects_negative_instead_of_looping() -> None:
    with pytest.raises(ValueError):
        flags_in(-1)
    with pytest.raises(ValueError):
        flags_in(-0x40)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_flags_in_property(flags: int) -> None:
    bits = flags_in(flags)
    assert bits == sorted(bits)
    assert len(bits) == len(set(bits)) == bin(flags).count("1")
    assert all(b > 0 and b & (b - 1) == 0 for b in bits)
    total = 0
    for bit in bits:
        total |= bit
    assert total == flags


@settings(max_examples=200, deadline=None)
@given(st.sets(st.sampled_from(SIGNAL_TYPES)))
def test_flags_in_gives_known_types_back_in_ascending_order(types: set[SignalType]) -> None:
    flags = 0
    for signal_type in types:
        flags |= signal_type.flag
    assert [by_flag(f) for f in flags_in(flags)] == sorted(types, key=lambda t: t.flag)
