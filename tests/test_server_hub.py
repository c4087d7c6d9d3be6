"""The stream hub: exact samples per tick, signal assembly, aperiodic presence, source failures."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from support import config_from_text, ramp_values
from zope.interface import implementer

from tia.protocol.packet import SampleArray, decode_packet, encode_header
from tia.protocol.signals import by_name
from tia.server.stream import HubError, StreamHub
from tia.sources import build_source
from tia.sources.base import ChannelSpec, ISource, SourceSpec


class Collector:
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def send_tick(self, flags: int, body: bytes, packet_id: int, timestamp: int) -> None:
        number = len(self.packets)
        self.packets.append(encode_header(len(body), flags, packet_id, number, timestamp) + body)


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
        hub.run_tick(tick)
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
    flags, body = hub.encode_tick(5)
    packet = decode_packet(encode_header(len(body), flags, 5, 0, 0) + body)
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
        flags, body = hub.encode_tick(tick)
        packet = decode_packet(encode_header(len(body), flags, tick, 0, 0) + body)
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


def test_one_encode_per_tick_shared_by_all_subscribers() -> None:
    hub = hub_for(MIXED)
    first, second = Collector(), Collector()
    hub.subscribe(first)
    hub.run_tick(0)
    hub.subscribe(second)
    hub.run_tick(1)
    assert decode_packet(second.packets[0]).connection_number == 0
    assert decode_packet(first.packets[1]).connection_number == 1
    assert first.packets[1][33:] == second.packets[0][33:]


@implementer(ISource)
class Flaky:
    def __init__(self, spec: SourceSpec, fail_at: set[int], wrong_shape_at: set[int] = frozenset()) -> None:  # type: ignore[assignment]
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
    return [hub.encode_tick(tick)[0] for tick in ticks]


def test_stop_signal_policy_drops_only_that_signal() -> None:
    hub = StreamHub([build_source(master()), Flaky(flaky_spec("stop-signal"), {2})])
    assert present_flags(hub, range(5)) == [0x3, 0x3, 0x1, 0x1, 0x1]


def test_zero_fill_policy_sends_zeros_until_recovery() -> None:
    hub = StreamHub([build_source(master()), Flaky(flaky_spec("zero-fill"), {2, 3})])
    values = []
    for tick in range(5):
        flags, body = hub.encode_tick(tick)
        values.append(decode_packet(encode_header(len(body), flags, tick, 0, 0) + body).signals[2][0, 0])
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
        def send_tick(self, flags: int, body: bytes, packet_id: int, timestamp: int) -> None:
            raise RuntimeError("broken pipe")

    hub = StreamHub([build_source(master())])
    good = Collector()
    hub.subscribe(Broken())
    hub.subscribe(good)
    hub.run_tick(0)
    hub.run_tick(1)
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


class HoldingCollector(Collector):
    """Records when it is told to hold and release, as a TCP data connection would batch."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def hold(self) -> None:
        self.calls.append("hold")

    def release(self) -> None:
        self.calls.append(f"release after {len(self.packets)}")


def test_a_burst_holds_the_subscribers_that_can_and_leaves_the_others() -> None:
    hub = hub_for(MIXED)
    holding, plain = HoldingCollector(), Collector()
    hub.subscribe(holding)
    hub.subscribe(plain)
    with hub.burst():
        for tick in range(3):
            hub.run_tick(tick)
    assert holding.calls == ["hold", "release after 3"]
    assert holding.packets == plain.packets  # the same packets, tick by tick
    assert [decode_packet(p).packet_id for p in plain.packets] == [0, 1, 2]
