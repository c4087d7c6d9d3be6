"""``--signal`` on aperiodic types: the packet grid, and defaults that send only when something happens."""

from __future__ import annotations

import numpy as np
import pytest

from tia.config import ConfigError, sources_from_signal_options
from tia.sources import build_source
from tia.sources.base import SourceSpec

MASTER = "eeg:4:512:16"  # 32 packets/s
SECONDS = 4
TICKS = 32 * SECONDS


def sent(spec: SourceSpec) -> list[tuple[int, np.ndarray]]:
    """(tick, values) of every packet that carries the signal, over SECONDS."""
    source = build_source(spec)
    source.start()
    blocks = [(tick, source.read(tick)) for tick in range(TICKS)]
    source.stop()
    return [(tick, block[:, 0].copy()) for tick, block in blocks if block is not None]


def aperiodic(signal: str) -> SourceSpec:
    specs = sources_from_signal_options([MASTER, signal])
    assert specs[1].sampling_rate == 32 and specs[1].block_size == 1  # the packet grid
    return specs[1]


@pytest.mark.parametrize("form", ["button:2", "button:2:0:0", "button:2:32:1"])
def test_the_grid_forms_are_the_same_signal(form: str) -> None:
    spec = aperiodic(form)
    assert (spec.driver, len(spec.channels), spec.channels[0].type.name) == ("square", 2, "button")
    assert spec.options == aperiodic("button:2").options


@pytest.mark.parametrize("kind", ["button", "mouse-button"])
def test_buttons_are_pressed_and_released_once_a_second(kind: str) -> None:
    packets = sent(aperiodic(f"{kind}:2"))
    values = [float(v[0]) for _, v in packets]
    assert values == [1.0, 0.0] * SECONDS  # press, release: only the changes are sent
    assert all(np.array_equal(v, [v[0], v[0]]) for _, v in packets)
    assert [tick for tick, _ in packets] == [t for second in range(SECONDS) for t in (32 * second, 32 * second + 16)]


def test_event_is_code_1_once_a_second() -> None:
    packets = sent(aperiodic("event:1"))
    assert [tick for tick, _ in packets] == [32, 64, 96]
    assert all(v.tolist() == [1.0] for _, v in packets)


def test_keycode_is_keys_a_b_c_in_turn_once_a_second() -> None:
    packets = sent(aperiodic("keycode:1:0:0"))
    assert [(tick, v.tolist()) for tick, v in packets] == [(32, [65.0]), (64, [66.0]), (96, [67.0])]


def test_axis_is_a_joystick_circling_every_four_seconds() -> None:
    packets = sent(aperiodic("axis:2"))
    assert len(packets) == TICKS  # it moves: every packet has a new position
    positions = np.array([v for _, v in packets])
    assert np.all(np.abs(positions) <= 1.0)
    np.testing.assert_allclose(np.hypot(positions[:, 0], positions[:, 1]), 1.0, atol=1e-5)  # x, y a quarter apart
    np.testing.assert_allclose(positions[0], [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(positions[32], [1.0, 0.0], atol=1e-6)  # a quarter turn a second


def test_an_explicit_wave_replaces_the_default() -> None:
    spec = aperiodic("event:1:0:0:square")
    assert spec.driver == "square"


@pytest.mark.parametrize(
    ("signals", "words"),
    [
        (["button:2"], "the first --signal is the master"),
        ([MASTER, "button:2:64:1"], "write button:2 or button:2:0:0"),
        ([MASTER, "button:2:0"], "TYPE:CHANNELS:0:0"),
        ([MASTER, "button:2:0:0:zigzag"], "WAVE 'zigzag'"),
        ([MASTER, "eeg:2"], "TYPE:CHANNELS:RATE:BLOCKSIZE"),
        ([MASTER, "button:1", "button:1"], "also --signal #2"),
    ],
)
def test_wrong_aperiodic_signals_name_the_option_and_its_position(signals: list[str], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        sources_from_signal_options(signals)
    assert info.value.key == f"--signal #{len(signals)} {signals[-1]!r}"
    assert words in str(info.value)
