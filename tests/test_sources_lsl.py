"""LSL inlet round trip on loopback with a pylsl outlet: exact samples, loss, recovery, checks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from support import config_from_text, wait_for

from tia.config import ConfigError
from tia.sources import build_source
from tia.sources.base import SourceError
from tia.sources.lsl import LSLSource


def _load_pylsl() -> tuple[Any, str]:
    try:
        import pylsl

        pylsl.library_info()
    except ImportError as error:
        return None, f"pylsl is not installed ({error}); pip install '.[test]'"
    except (OSError, RuntimeError) as error:
        return None, f"pylsl cannot load liblsl: {error}"
    return pylsl, ""


pylsl, REASON = _load_pylsl()
pytestmark = pytest.mark.skipif(pylsl is None, reason=REASON)

RATE, CHANNELS, BLOCK = 100, 3, 10


def lsl_source(name: str, extra: str = "", channels: int = CHANNELS, kind: str = "eeg") -> LSLSource:
    config = config_from_text(
        f"[source:lsl]\ndriver = lsl\nstream_name = {name}\nrate = {RATE}\nblocksize = {BLOCK}\n"
        f"channels = {channels}\ntype = {kind}\nlost_after = 0.5\ngive_up_after = 0\n{extra}"
    )
    source = build_source(config.sources[0])
    assert isinstance(source, LSLSource)
    return source


def outlet(name: str, source_id: str = "", rate: float = RATE, fmt: str = "float32", channels: int = CHANNELS) -> Any:
    info = pylsl.StreamInfo(name, "EEG", channels, rate, fmt, source_id or name)
    return pylsl.StreamOutlet(info)


@pytest.fixture
def name() -> str:
    return f"txtia-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def started() -> Iterator[list[LSLSource]]:
    sources: list[LSLSource] = []
    yield sources
    for source in sources:
        source.stop()


def values(start: int, count: int) -> np.ndarray:
    """(samples, channels): channel c of sample k is k + 1000 c, exact in float32."""
    k = np.arange(start, start + count, dtype=np.float32)
    return np.stack([k + 1000 * c for c in range(CHANNELS)], axis=1)


def collect(source: LSLSource, blocks: int, first_tick: int = 0) -> list[np.ndarray]:
    got: list[np.ndarray] = []
    tick = first_tick

    def step() -> bool:
        nonlocal tick
        block = source.read(tick)
        tick += 1
        if block is not None:
            got.append(block)
        return len(got) >= blocks

    wait_for(step)
    return got


def test_round_trip_exact_samples(name: str, started: list[LSLSource]) -> None:
    stream = outlet(name)
    source = lsl_source(name)
    started.append(source)
    source.start()
    wait_for(lambda: stream.have_consumers())  # subscribed: every sample pushed from now on reaches it
    stream.push_chunk(values(0, 95))
    blocks = collect(source, 9)
    assert all(b.shape == (CHANNELS, BLOCK) for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), values(0, 90).T)
    assert source.read(100) is None  # 5 samples left: no partial block, nothing invented
    assert source.metrics()["received"] == 95


@pytest.mark.parametrize("same_id", [True, False], ids=["liblsl-recovers", "resolved-again"])
def test_loss_and_recovery_without_invented_samples(name: str, started: list[LSLSource], same_id: bool) -> None:
    source_id = f"{name}-id"
    stream = outlet(name, source_id)
    source = lsl_source(name)
    started.append(source)
    source.start()
    wait_for(lambda: stream.have_consumers())
    stream.push_chunk(values(0, 20))
    assert len(collect(source, 2)) == 2
    del stream  # the outlet goes away
    wait_for(lambda: source.read(50) is None and bool(source.metrics()["lost"]))
    stream = outlet(name, source_id if same_id else f"{source_id}-new")
    wait_for(lambda: stream.have_consumers())
    stream.push_chunk(values(1000, 30))
    blocks = collect(source, 3, first_tick=60)
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), values(1000, 30).T)
    assert source.metrics()["lost"] is False and source.losses == 1


def test_a_stream_of_another_rate_is_a_failure_naming_the_section(name: str, started: list[LSLSource]) -> None:
    stream = outlet(name, rate=250)
    source = lsl_source(name)
    started.append(source)
    source.start()
    with pytest.raises(SourceError, match=r"source \[lsl\].*nominal rate of 250 Hz.*nothing is resampled"):
        wait_for(lambda: source.read(0) is not None and False)
    del stream


def test_a_marker_stream_feeds_events(name: str, started: list[LSLSource]) -> None:
    stream = outlet(name, rate=pylsl.IRREGULAR_RATE, fmt="string", channels=1)
    config = config_from_text(
        "[source:eeg]\ndriver = sine\nrate = 100\nblocksize = 10\nchannels = 1\ntype = eeg\n"
        f"[source:markers]\ndriver = lsl\nstream_name = {name}\nchannels = m:event\n"
    )
    source = build_source(config.sources[1])
    assert isinstance(source, LSLSource)
    started.append(source)
    source.start()
    wait_for(lambda: stream.have_consumers())
    for marker in ("3", "oops", "4.5"):
        stream.push_sample([marker])
    codes = [float(block[0, 0]) for block in collect(source, 2)]
    assert codes == [3.0, 4.5]


def test_config_needs_a_stream_property() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_text("[source:lsl]\ndriver = lsl\nrate = 100\nchannels = 2\ntype = eeg\n")
    assert (info.value.section, info.value.key) == ("source:lsl", "stream_name")
    with pytest.raises(ConfigError) as info:
        config_from_text("[source:lsl]\ndriver = lsl\nstream_name = a'b\nrate = 100\nchannels = 2\ntype = eeg\n")
    assert info.value.key == "stream_name"
