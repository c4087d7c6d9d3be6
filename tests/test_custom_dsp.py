"""Selection and decimation of customized connections (tia.server.custom) against numpy/scipy references."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from scipy import signal
from support import config_from_text, ramp_values

from tia.protocol.custom import CustomSignalInfo, CustomSpec
from tia.protocol.packet import DataPacket, decode_packet, encode_header
from tia.server.custom import (
    PASSBAND_FRACTION,
    CustomStream,
    CustomStreams,
    Decimator,
    decimation_filter,
)
from tia.server.hub import StreamHub
from tia.server.tick import Tick
from tia.sources import build_source


class Collector:
    """A subscriber like the data channels: numbers its packets and keeps them."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []

    def deliver(self, ticks: Sequence[Tick]) -> None:
        for tick in ticks:
            body = tick.body
            self.raw.append(encode_header(len(body), tick.flags, tick.packet_id, len(self.raw), tick.timestamp) + body)

    @property
    def packets(self) -> list[DataPacket]:
        return [decode_packet(raw) for raw in self.raw]


def hub_for(text: str) -> StreamHub:
    config = config_from_text(text)
    return StreamHub([build_source(s) for s in config.sources], config.subject)


def customized(hub: StreamHub, spec: CustomSpec, streams: CustomStreams | None = None) -> Collector:
    collector = Collector()
    custom = CustomSignalInfo.from_spec(spec, hub.metainfo)
    (streams if streams is not None else CustomStreams(hub)).subscribe(custom, collector)
    return collector


def reference_decimation(x: np.ndarray, factor: int) -> np.ndarray:
    """scipy: the same FIR over the whole signal in one go (state primed with the first sample), every factor-th."""
    taps = decimation_filter(factor)
    zi = signal.lfilter_zi(taps, 1.0)
    rows = [signal.lfilter(taps, 1.0, row.astype(np.float64), zi=zi * float(row[0]))[0] for row in x]
    return np.asarray(rows)[:, ::factor]


# -- the filter ------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 3, 4, 5, 8, 16, 32, 64, 256])
def test_filter_design(factor: int) -> None:
    taps = decimation_filter(factor)
    assert len(taps) % 2 == 1 and np.allclose(taps, taps[::-1])  # linear phase, integer delay
    assert abs(taps.sum() - 1) < 1e-3  # unity gain at DC
    new_nyquist = np.pi / factor
    # from the new Nyquist frequency to the input's, at least 40 dB down (the design gives ~50)
    _, stop = signal.freqz(taps, worN=np.linspace(new_nyquist, np.pi, 8000))
    assert 20 * np.log10(np.abs(stop).max()) <= -40
    _, at_nyquist = signal.freqz(taps, worN=[new_nyquist])
    assert 20 * np.log10(abs(at_nyquist[0])) <= -40
    # the passband: flat within 0.1 dB up to 0.8 x the new Nyquist frequency
    _, passband = signal.freqz(taps, worN=np.linspace(0, PASSBAND_FRACTION * new_nyquist, 2000))
    assert np.abs(20 * np.log10(np.abs(passband))).max() <= 0.1
    assert decimation_filter(factor) is taps  # designed once per factor


def test_filter_needs_a_factor() -> None:
    with pytest.raises(ValueError, match="factor >= 2"):
        decimation_filter(1)
    with pytest.raises(ValueError, match="cannot decimate blocks of 6 samples by 4"):
        Decimator(4, 6)


@pytest.mark.parametrize(
    ("factor", "block"),
    [(2, 2), (4, 8), (4, 4), (16, 16), (2, 256), (3, 300), (8, 64)],  # (2, 256), (3, 300): chunked products
)
def test_blocks_join_seamlessly(factor: int, block: int) -> None:
    rng = np.random.default_rng(factor * 1000 + block)
    x = (rng.standard_normal((3, block * 40)) * 50 + 100).astype(np.float32)
    decimator = Decimator(factor, block)
    pieces = [decimator.process(x[:, i : i + block], i // block) for i in range(0, x.shape[1], block)]
    out = np.concatenate(pieces, axis=1)
    assert out.dtype == np.float32 and out.shape == (3, x.shape[1] // factor)
    np.testing.assert_allclose(out, reference_decimation(x, factor), rtol=1e-6, atol=1e-4)


def test_a_gap_in_the_ticks_primes_the_state_afresh() -> None:
    rng = np.random.default_rng(7)
    first, second = rng.standard_normal((2, 2, 8)).astype(np.float32)
    decimator = Decimator(4, 8)
    decimator.process(first, 10)
    after_gap = decimator.process(second, 20)  # Stop ... Start: ticks 11..19 never came
    np.testing.assert_array_equal(after_gap, Decimator(4, 8).process(second, 20))
    resumed = Decimator(4, 8)
    resumed.process(first, 10)
    continued = resumed.process(second, 11)
    assert not np.array_equal(continued, after_gap)


def test_group_delay_is_half_the_filter() -> None:
    decimator = Decimator(4, 8)
    assert decimator.group_delay == (len(decimator.taps) - 1) / 2
    # a step at input sample s reaches half height at output index (s + delay) / factor
    x = np.zeros((1, 800), dtype=np.float32)
    x[:, 400:] = 1
    out = np.concatenate([decimator.process(x[:, i : i + 8], i // 8) for i in range(0, 800, 8)], axis=1)[0]
    crossing = np.argmax(out >= 0.5) * 4
    assert abs(crossing - (400 + decimator.group_delay)) <= 4


# -- the stream path -----------------------------------------------------------------

SINES = """
[source:eeg]
driver = sine
rate = 1000
blocksize = 8
type = eeg
; below the new Nyquist frequency (125 Hz at factor 4), then above it
channels = low, mid, edge, above, far, top
frequency = 10, 80, 100, 130, 300, 490
amplitude = 1
"""


def test_sines_through_the_stream_path() -> None:
    hub = hub_for(SINES)
    plain = Collector()
    hub.subscribe(plain)
    collector = customized(hub, {"eeg": {"downsample": 4}})
    for tick in range(1000):  # 8 s
        hub.run(tick)
    packets = collector.packets
    assert [p.connection_number for p in packets] == list(range(1000))
    assert all(p.signals[1].shape == (6, 2) for p in packets)
    samples = np.concatenate([p.signals[1] for p in packets], axis=1).astype(np.float64)  # 250 Hz
    steady = samples[:, 250:]  # past the filter's start-up (59 output samples)
    steady = steady[:, : steady.shape[1] // 25 * 25]  # whole periods of 10 and 80 Hz at 250 Hz
    peak = np.sqrt(2) * np.sqrt((steady**2).mean(axis=1))
    gain_db = 20 * np.log10(peak)
    assert abs(gain_db[0]) <= 0.1, gain_db  # 10 Hz
    assert abs(gain_db[1]) <= 0.1, gain_db  # 80 Hz = 0.64 x the new Nyquist
    assert abs(gain_db[2]) <= 0.1, gain_db  # 100 Hz = 0.8 x the new Nyquist
    assert (gain_db[3:] <= -40).all(), gain_db  # 130, 300 and 490 Hz would alias: gone
    # and the same samples as scipy on the whole signal at once
    original = np.concatenate([p.signals[1] for p in plain.packets], axis=1)
    np.testing.assert_allclose(samples, reference_decimation(original, 4), atol=2e-6)


RAMP = """
[source:eeg]
driver = ramp
rate = 1000
blocksize = 10
channels = 5
type = eeg

[source:bp]
driver = ramp
rate = 100
blocksize = 1
channels = BP1:bp, BP2:bp

[source:button]
driver = square
channels = B1:button
frequency = 20
"""


def test_selection_in_the_requested_order_exact() -> None:
    hub = hub_for(RAMP)
    collector = customized(hub, {"eeg": {"channels": [5, 2, 3]}, "bp": {"channels": ["BP2"]}})
    for tick in range(50):
        hub.run(tick)
    for tick, packet in enumerate(collector.packets):
        assert packet.flags == 0x21
        expected = ramp_values(5, tick * 10, 10)
        np.testing.assert_array_equal(packet.signals[1], [expected[4], expected[1], expected[2]])
        np.testing.assert_array_equal(packet.signals[0x20], [ramp_values(2, tick, 1)[1]])


def test_aperiodic_signals_come_and_go_one_packet_per_tick_regardless() -> None:
    hub = hub_for(RAMP)
    plain = Collector()
    hub.subscribe(plain)
    collector = customized(hub, {"button": {}})
    for tick in range(40):
        hub.run(tick)
    mine, theirs = collector.packets, plain.packets
    assert len(mine) == 40 and [p.connection_number for p in mine] == list(range(40))
    for packet, full in zip(mine, theirs, strict=True):
        assert packet.packet_id == full.packet_id and packet.timestamp == full.timestamp
        if 0x40 in full.signals:
            assert packet.flags == 0x40
            np.testing.assert_array_equal(packet.signals[0x40], full.signals[0x40])
        else:
            assert packet.flags == 0 and packet.signals == {}  # an empty packet keeps the rate
    assert any(p.flags for p in mine) and any(not p.flags for p in mine)


def test_packets_match_the_customized_metainfo() -> None:
    hub = hub_for(RAMP)
    spec: CustomSpec = {"eeg": {"channels": [1, 4], "downsample": 5}, "bp": {}, "button": {}}
    meta = CustomSignalInfo.from_spec(spec, hub.metainfo).metainfo(hub.metainfo)
    collector = customized(hub, spec)
    for tick in range(20):
        hub.run(tick)
    for packet in collector.packets:
        for flag, block in packet.signals.items():
            info = meta.signal(flag)
            assert block.shape == (info.num_channels, info.block_size)
    assert meta.signal("eeg").block_size == 2 and meta.signal("eeg").sampling_rate == 200


def test_plain_subscribers_get_the_very_same_bytes() -> None:
    """The shared encode-once body is untouched by customized neighbours."""
    alone, crowded = hub_for(RAMP), hub_for(RAMP)
    reference, plain = Collector(), Collector()
    alone.subscribe(reference)
    customized(crowded, {"eeg": {"channels": [2], "downsample": 2}})
    crowded.subscribe(plain)
    customized(crowded, {"bp": {}})
    for tick in range(30):
        alone.run(tick)
        crowded.run(tick)
    assert plain.raw == reference.raw


def test_a_signal_that_stops_is_dropped_and_the_filter_restarts_when_it_returns() -> None:
    hub = hub_for(RAMP)
    collector = Collector()
    stream = CustomStream(CustomSignalInfo.from_spec({"eeg": {"downsample": 2}, "bp": {}}, hub.metainfo), hub.metainfo)
    stream.add(collector)
    eeg = np.arange(50, dtype=np.float32).reshape(5, 10)
    bp = np.ones((2, 1), dtype=np.float32)
    stream.deliver([Tick.from_blocks(0, 0, [(1, eeg), (0x20, bp)])])
    stream.deliver([Tick.from_blocks(1, 0, [(0x20, bp)])])  # the eeg source failed for a tick
    stream.deliver([Tick.from_blocks(2, 0, [(1, eeg + 1000), (0x20, bp)])])
    first, missing, back = collector.packets
    assert first.flags == 0x21 and missing.flags == 0x20 and back.flags == 0x21
    np.testing.assert_array_equal(back.signals[1], Decimator(2, 10).process(eeg + 1000))


def test_identical_requests_share_one_stream_and_get_the_same_samples() -> None:
    hub = hub_for(RAMP)
    streams = CustomStreams(hub)
    spec: CustomSpec = {"eeg": {"channels": [1, 3], "downsample": 5}}
    first = customized(hub, spec, streams)
    for tick in range(10):
        hub.run(tick)
    second = customized(hub, spec, streams)
    other = customized(hub, {"bp": {}}, streams)
    assert len(streams) == 2 and len(hub.subscribers) == 2  # one filter for both eeg clients
    for tick in range(10, 20):
        hub.run(tick)
    mine = [p.signals[1].tobytes() for p in first.packets[10:]]
    assert [p.signals[1].tobytes() for p in second.packets] == mine
    assert [p.connection_number for p in second.packets] == list(range(10))  # numbered per connection
    assert len(other.packets) == 10
    custom = CustomSignalInfo.from_spec(spec, hub.metainfo)
    streams.unsubscribe(custom, first)
    streams.unsubscribe(custom, second)
    assert len(streams) == 1 and len(hub.subscribers) == 1  # the last one left: off the hub
