"""The stream hub: exact samples per tick, signal assembly, aperiodic presence, source failures."""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from fractions import Fraction

import numpy as np
import pytest
from support import config_from_text, ramp_values
from zope.interface import implementer

from tia.protocol.packet import DataPacket, SampleArray, decode_packet, encode_header
from tia.protocol.signals import by_name
from tia.server.hub import BATCH_BYTES, HubError, StreamHub
from tia.server.tick import Tick
from tia.sources import build_source
from tia.sources.base import ChannelSpec, ISource, SourceSpec


class Collector:
    """A subscriber that numbers and encodes its packets as a data connection does."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []
        self.ticks: list[Tick] = []
        self.batches: list[int] = []

    def deliver(self, ticks: Sequence[Tick]) -> None:
        self.batches.append(len(ticks))
        for tick in ticks:
            number = len(self.packets)
            self.ticks.append(tick)
            header = encode_header(len(tick.body), tick.flags, tick.packet_id, number, tick.timestamp)
            self.packets.append(header + tick.body)


def packet_of(tick: Tick) -> DataPacket:
    return decode_packet(encode_header(len(tick.body), tick.flags, tick.packet_id, 0, tick.timestamp) + tick.body)


def hub_for(text: str) -> StreamHub:
    config = config_from_text(text)
    return StreamHub([build_source(s) for s in config.sources], config.subject)


MIXED = """
[source:eeg]
driver = ramp
rate = 512
blocksize = 16
channels = Fp1, Fp2, HEOG:eog, Cz
type = eeg

[source:bp]
driver = ramp
rate = 64
blocksize = 2
channels = BP:bp

[source:button]
driver = square
channels = B1:button
frequency = 4

[source:markers]
driver = events
channels = trig:event
interval = 0.25
codes = 7, 8
"""


def test_ramp_values_are_exact_tick_by_tick() -> None:
    hub = hub_for("[source:eeg]\ndriver = ramp\nrate = 1000\nblocksize = 10\nchannels = 3\ntype = eeg\n")
    collector = Collector()
    hub.subscribe(collector)
    for tick in range(150):
        hub.run(tick)
    for tick, raw in enumerate(collector.packets):
        packet = decode_packet(raw)
        assert packet.packet_id == tick
        assert packet.connection_number == tick
        assert packet.timestamp == tick * 10_000  # microseconds on the tick grid
        np.testing.assert_array_equal(packet.signals[1], ramp_values(3, tick * 10, 10))


def test_signals_assembled_by_type_in_flag_order_with_their_own_rates() -> None:
    hub = hub_for(MIXED)
    meta = hub.metainfo
    assert [s.type.name for s in meta.signals] == ["eeg", "eog", "bp", "button", "event"]
    assert meta.signal("eeg").labels == ("Fp1", "Fp2", "Cz")
    assert meta.signal("eog").labels == ("HEOG",)
    assert (meta.master_sampling_rate, meta.master_block_size) == (512, 16)
    assert (meta.signal("bp").sampling_rate, meta.signal("bp").block_size) == (64, 2)
    assert (meta.signal("event").sampling_rate, meta.signal("event").block_size) == (32, 1)
    packet = packet_of(hub.produce(5))
    eeg_rows = ramp_values(4, 5 * 16, 16)
    np.testing.assert_array_equal(packet.signals[by_name("eeg").flag], [eeg_rows[0], eeg_rows[1], eeg_rows[3]])
    np.testing.assert_array_equal(packet.signals[by_name("eog").flag], [eeg_rows[2]])
    np.testing.assert_array_equal(packet.signals[by_name("bp").flag], ramp_values(1, 10, 2))


def test_aperiodic_signals_only_in_packets_where_they_change() -> None:
    hub = hub_for(MIXED)
    button, event = by_name("button").flag, by_name("event").flag
    present = {button: [], event: []}  # type: dict[int, list[int]]
    values = {button: [], event: []}  # type: dict[int, list[float]]
    for tick in range(64):  # two seconds at 32 packets/s
        packet = packet_of(hub.produce(tick))
        for flag in (button, event):
            if flag in packet.signals:
                present[flag].append(tick)
                values[flag].append(float(packet.signals[flag][0, 0]))
    # square wave at 4 Hz on 32 packets/s: a change every 4 ticks, first state at tick 0
    assert present[button] == list(range(0, 64, 4))
    assert values[button] == [1.0, 0.0] * 8
    # an event every 0.25 s = 8 ticks, codes cycling 7, 8, never at tick 0
    assert present[event] == list(range(8, 64, 8))
    assert values[event] == [7.0, 8.0, 7.0, 8.0, 7.0, 8.0, 7.0]


def test_one_tick_object_and_one_encode_per_tick_shared_by_all_subscribers() -> None:
    hub = hub_for(MIXED)
    first, second = Collector(), Collector()
    hub.subscribe(first)
    hub.run(0)
    hub.subscribe(second)
    hub.run(1)
    assert decode_packet(second.packets[0]).connection_number == 0
    assert decode_packet(first.packets[1]).connection_number == 1
    assert first.ticks[1] is second.ticks[0]  # the same object, so the same encoded body
    assert first.ticks[1].body is second.ticks[0].body


def test_tick_blocks_are_read_only_views_of_what_is_sent() -> None:
    hub = hub_for(MIXED)
    tick = hub.produce(5)
    packet = packet_of(tick)
    assert [flag for flag, _ in tick.blocks] == list(packet.signals)
    for flag, block in tick.blocks:
        np.testing.assert_array_equal(block, packet.signals[flag])
        assert not block.flags.writeable
    assert tick.block(by_name("hr").flag) is None


def test_sample_major_layout_sends_each_block_sample_by_sample() -> None:
    config = config_from_text("[source:eeg]\ndriver = ramp\nrate = 1000\nblocksize = 4\nchannels = 3\ntype = eeg\n")
    hub = StreamHub([build_source(s) for s in config.sources], sample_order="sample-major")
    tick = hub.produce(2)
    expected = np.array(ramp_values(3, 8, 4), dtype=np.float32)
    samples = np.frombuffer(tick.body, "<f4", offset=4)
    np.testing.assert_array_equal(samples, expected.T.reshape(-1))  # s1 ch1..ch3, s2 ...
    np.testing.assert_array_equal(tick.block(1), expected)  # the blocks read back as (channels, block)


@implementer(ISource)
class Flaky:
    device_clocked = False

    def __init__(
        self, spec: SourceSpec, fail_at: AbstractSet[int], wrong_shape_at: AbstractSet[int] = frozenset()
    ) -> None:
        self.spec = spec
        self.fail_at = fail_at
        self.wrong_shape_at = wrong_shape_at

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def read(self, tick: int) -> SampleArray | None:
        if tick in self.fail_at:
            raise OSError("device unplugged")
        if tick in self.wrong_shape_at:
            return np.zeros(3, dtype=np.float32)
        return np.full((2, 1), tick, dtype=np.float32)


def flaky_spec(policy: str, name: str = "flaky", kind: str = "emg") -> SourceSpec:
    channels = (ChannelSpec("a", by_name(kind)), ChannelSpec("b", by_name(kind)))
    return SourceSpec(name, "callback", Fraction(10), 1, channels, {}, policy)


def master() -> SourceSpec:
    return SourceSpec("eeg", "ramp", Fraction(10), 1, (ChannelSpec("c", by_name("eeg")),))


def present_flags(hub: StreamHub, ticks: range) -> list[int]:
    return [hub.produce(tick).flags for tick in ticks]


def test_stop_signal_policy_drops_only_that_signal() -> None:
    hub = StreamHub([build_source(master()), Flaky(flaky_spec("stop-signal"), {2})])
    assert present_flags(hub, range(5)) == [0x3, 0x3, 0x1, 0x1, 0x1]


def test_zero_fill_policy_sends_zeros_until_recovery() -> None:
    hub = StreamHub([build_source(master()), Flaky(flaky_spec("zero-fill"), {2, 3})])
    values = []
    for tick in range(5):
        values.append(packet_of(hub.produce(tick)).signals[2][0, 0])
    assert values == [0, 1, 0, 0, 4]


def test_wrong_number_of_values_is_a_source_failure() -> None:
    hub = StreamHub([build_source(master()), Flaky(flaky_spec("stop-signal"), set(), {1})])
    assert present_flags(hub, range(3)) == [0x3, 0x1, 0x1]


def test_stop_server_policy_calls_the_fatal_hook() -> None:
    reasons: list[str] = []
    hub = StreamHub([build_source(master()), Flaky(flaky_spec("stop-server"), {1})], on_fatal=reasons.append)
    present_flags(hub, range(3))
    assert len(reasons) == 1 and "flaky" in reasons[0] and "unplugged" in reasons[0]


def test_a_failing_subscriber_is_dropped_and_others_go_on() -> None:
    class Broken:
        def deliver(self, ticks: Sequence[Tick]) -> None:
            raise RuntimeError("broken pipe")

    hub = StreamHub([build_source(master())])
    good = Collector()
    hub.subscribe(Broken())
    hub.subscribe(good)
    hub.run(0)
    hub.run(1)
    assert len(good.packets) == 2
    assert len(hub.subscribers) == 1


def test_mismatched_packet_rates_are_refused() -> None:
    other = SourceSpec("emg", "ramp", Fraction(20), 1, (ChannelSpec("e", by_name("emg")),))
    with pytest.raises(HubError):
        StreamHub([build_source(master()), build_source(other)])


def test_only_aperiodic_sources_are_refused() -> None:
    spec = SourceSpec("b", "square", Fraction(10), 1, (ChannelSpec("b", by_name("button")),))
    with pytest.raises(HubError):
        StreamHub([build_source(spec)])


def test_a_catch_up_reaches_every_subscriber_in_bounded_batches_of_the_same_ticks() -> None:
    hub = hub_for(MIXED)
    first, second = Collector(), Collector()
    hub.subscribe(first)
    hub.subscribe(second)
    hub.run(0)
    count = 3 * BATCH_BYTES // hub.max_packet_size  # a stall of several batches
    hub.run(1, count)
    assert [decode_packet(p).packet_id for p in first.packets] == list(range(count + 1))
    assert first.batches == second.batches
    assert first.batches[0] == 1 and len(first.batches) >= 4
    assert max(first.batches) * hub.max_packet_size <= BATCH_BYTES
    assert all(a is b for a, b in zip(first.ticks, second.ticks, strict=True))
    assert hub.ticks_sent == count + 1


def test_source_health_shows_each_source_state() -> None:
    hub = StreamHub([build_source(master()), Flaky(flaky_spec("stop-signal"), {1})])
    assert [h.state for h in hub.source_health()] == ["streaming", "streaming"]
    present_flags(hub, range(3))
    health = hub.source_health()
    assert [(h.name, h.driver, h.state) for h in health] == [
        ("eeg", "ramp", "streaming"), ("flaky", "callback", "failed")
    ]
    assert health[1].missed_blocks == 0 and health[1].rate_error_ppm is None
