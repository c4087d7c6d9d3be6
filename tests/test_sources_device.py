"""Device-clocked sources: complete blocks only, drops and misses counted, rate measured, loss handled."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from support import LogCapture, wait_for
from zope.interface import implementer

from tia.protocol.packet import SampleArray, decode_packet, encode_header
from tia.protocol.signals import by_name
from tia.server.hub import StreamHub
from tia.sources import build_source
from tia.sources.base import ChannelSpec, IDeviceClockedSource, ISource, SourceError, SourceSpec
from tia.sources.device import BufferStats, DeviceBuffer, ProducerSource


def ramp(channels: int, start: int, count: int) -> np.ndarray:
    k = np.arange(start, start + count, dtype=np.float32)
    return np.stack([k + 1000 * c for c in range(channels)])


def test_blocks_are_exact_across_chunk_boundaries() -> None:
    buffer = DeviceBuffer(channels=2, block_size=4, nominal_rate=100, max_latency=10)
    assert buffer.pop_block() is None
    assert buffer.short_ticks == 0  # before the first block: starting, not short
    sent = 0
    for size in (3, 7, 1, 9, 5):
        buffer.push(ramp(2, sent, size))
        sent += size
    blocks = [b for b in (buffer.pop_block() for _ in range(6)) if b is not None]
    assert len(blocks) == 6 and all(b.shape == (2, 4) for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), ramp(2, 0, 24))
    assert buffer.pop_block() is None  # one sample left: never padded
    assert (buffer.short_ticks, buffer.delivered, buffer.received, buffer.stats().buffered) == (1, 24, 25, 1)


def test_over_full_drops_the_oldest_and_counts_them() -> None:
    buffer = DeviceBuffer(channels=1, block_size=4, nominal_rate=100, max_latency=0.1)  # capacity 10 samples
    assert buffer.capacity == 10
    assert buffer.push(ramp(1, 0, 25)) == 15
    assert buffer.dropped == 15
    np.testing.assert_array_equal(buffer.pop_block(), ramp(1, 15, 4))


def test_wrong_shape_is_refused() -> None:
    buffer = DeviceBuffer(channels=3, block_size=1, nominal_rate=10)
    with pytest.raises(ValueError, match=r"\(3, n\)"):
        buffer.push(np.zeros((2, 5)))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("actual", [100.1, 99.5, 100.0])
def test_rate_is_measured_against_nominal(actual: float) -> None:
    clock = FakeClock()
    buffer = DeviceBuffer(channels=1, block_size=10, nominal_rate=100, max_latency=60, rate_window=10, clock=clock)
    jitter = np.random.default_rng(0)
    sent = 0
    while clock.now < 4:
        sent += 10
        clock.now = sent / actual + float(jitter.uniform(0, 0.004))  # arrival, a few ms late
        buffer.push(ramp(1, sent, 10))
    assert buffer.measured_rate() is None  # less than half a window seen
    while clock.now < 20:
        sent += 10
        clock.now = sent / actual + float(jitter.uniform(0, 0.004))
        buffer.push(ramp(1, sent, 10))
        buffer.pop_block()
    stats = buffer.stats()
    assert stats.rate_error_ppm == pytest.approx((actual / 100 - 1) * 1e6, abs=200)
    assert stats.measured_rate == pytest.approx(actual, rel=2e-4)


@implementer(IDeviceClockedSource)
class Scripted:
    """A source returning scripted blocks; ``device_clocked`` as given."""

    def __init__(self, spec: SourceSpec, device_clocked: bool, present: Callable[[int], bool]) -> None:
        self.spec = spec
        self.device_clocked = device_clocked
        self.present = present

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def read(self, tick: int) -> SampleArray | None:
        return np.full((1, 2), tick, dtype=np.float32) if self.present(tick) else None

    def metrics(self) -> dict[str, float | int | bool | None]:
        return {"dropped": 0, "rate_error_ppm": None}


def spec(name: str = "dev", kind: str = "emg", rate: int = 20, block: int = 2, **options: Any) -> SourceSpec:
    return SourceSpec(name, "producer", Fraction(rate), block, (ChannelSpec("a", by_name(kind)),), options)


def master() -> ISource:
    return build_source(SourceSpec("eeg", "ramp", Fraction(20), 2, (ChannelSpec("c", by_name("eeg")),)))


def test_hub_leaves_out_a_device_signal_without_a_block_and_counts_it() -> None:
    hub = StreamHub([master(), Scripted(spec(), True, lambda tick: tick % 3 != 1)])
    flags = [hub.produce(tick).flags for tick in range(6)]
    assert flags == [0x3, 0x1, 0x3, 0x3, 0x1, 0x3]
    assert hub.source_health()[1].missed_blocks == 2
    assert hub.source_health()[1].state != "failed"


def test_hub_still_fails_a_periodic_source_that_is_not_device_clocked() -> None:
    hub = StreamHub([master(), Scripted(spec(), False, lambda tick: tick != 1)])
    assert [hub.produce(tick).flags for tick in range(3)] == [0x3, 0x1, 0x1]
    assert hub.source_health()[1].state == "failed"


@pytest.fixture
def logged() -> Iterator[LogCapture]:
    with LogCapture() as log:
        yield log


def test_producer_thread_samples_arrive_exactly_and_in_order() -> None:
    def produce(push: Callable[[Any], None], stopping: threading.Event) -> None:
        sent = 0
        for size in (7, 3, 11, 1, 18):
            push(ramp(2, sent, size))
            sent += size
        stopping.wait()

    channels = (ChannelSpec("x", by_name("emg")), ChannelSpec("y", by_name("emg")))
    source = ProducerSource(SourceSpec("prod", "producer", Fraction(100), 5, channels,
                                       {"callable": produce, "max_latency": 5.0}))
    hub = StreamHub([build_source(SourceSpec("eeg", "ramp", Fraction(20), 1, (ChannelSpec("c", by_name("eeg")),))),
                     source])
    hub.start_sources()
    try:
        wait_for(lambda: source.buffer.received == 40)
        blocks = []
        for tick in range(10):
            source_block = source.read(tick)
            if source_block is not None:
                blocks.append(source_block)
        np.testing.assert_array_equal(np.concatenate(blocks, axis=1), ramp(2, 0, 40))
        metrics = source.metrics()
        assert (metrics["received"], metrics["delivered"], metrics["dropped"]) == (40, 40, 0)
        assert metrics["short_ticks"] == 2
    finally:
        hub.stop_sources()


def test_loss_recovery_and_give_up(logged: LogCapture) -> None:
    resume = threading.Event()

    def produce(push: Callable[[Any], None], stopping: threading.Event) -> None:
        push(np.zeros((1, 4)))
        resume.wait(10)
        push(np.ones((1, 4)))
        stopping.wait()

    source = ProducerSource(spec("flaky", callable=produce, lost_after=0.2, give_up_after=1.0))
    source.start()
    try:
        wait_for(lambda: source.buffer.received == 4)
        assert source.read(0) is not None
        wait_for(lambda: source.read(1) is None and bool(source.metrics()["lost"]))
        assert any("[flaky]" in line and "lost" in line for _, line in logged.lines)
        resume.set()
        wait_for(lambda: source.read(2) is not None)
        assert source.metrics()["lost"] is False and source.losses == 1
        assert any("[flaky]" in line and "delivers again" in line for _, line in logged.lines)
        # now silent for good: lost after 0.2 s, a failure after 1 s more
        with pytest.raises(SourceError, match=r"source \[flaky\].*lost for"):
            wait_for(lambda: source.read(3) is None and False, seconds=10)
    finally:
        source.stop()


def test_a_raising_producer_is_a_source_failure_naming_the_section() -> None:
    def produce(push: Callable[[Any], None], stopping: threading.Event) -> None:
        raise OSError("USB device unplugged")

    source = ProducerSource(spec("amp", callable=produce))
    hub = StreamHub([master(), source])
    hub.start_sources()
    try:
        wait_for(lambda: source._failure is not None)
        assert hub.produce(0).flags == 0x1  # stop-signal: the rest keeps serving
        assert hub.source_health()[1].state == "failed"
    finally:
        hub.stop_sources()


def test_rate_off_tolerance_is_logged_with_ppm(logged: LogCapture, monkeypatch: pytest.MonkeyPatch) -> None:
    source = ProducerSource(spec("amp", callable=lambda push, stopping: stopping.wait(), rate_tolerance=0.5))
    monkeypatch.setattr(source, "_lost_since", None)
    stats = BufferStats(100, 90, 3, 2, 10, 20.12, 6000.0)
    monkeypatch.setattr(source.buffer, "stats", lambda: stats)
    source._report()
    text = "\n".join(line for _, line in logged.lines)
    assert "[amp] delivers 20.1200 Hz against a nominal 20 Hz (+6000 ppm, tolerance 0.5 %)" in text
    assert "3 oldest samples dropped" in text and "2 ticks without a complete block" in text
    logged.lines.clear()
    monkeypatch.setattr(source.buffer, "stats", lambda: BufferStats(200, 190, 3, 2, 10, 20.001, 50.0))
    source._report()
    assert logged.count("back within tolerance")


def test_producer_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from support import config_from_text

    cfg = config_from_text(
        "[source:eeg]\ndriver = sine\nrate = 100\nblocksize = 10\nchannels = 1\ntype = eeg\n"
        "[source:amp]\ndriver = producer\ncallable = threading:Event\nrate = 50\nblocksize = 5\nchannels = 2\n"
        "type = emg\nmax_latency = 0.5\nrate_tolerance = 1%\nlost_after = 1\ngive_up_after = 0\n"
    )
    options = cfg.sources[1].options
    assert (options["max_latency"], options["rate_tolerance"], options["give_up_after"]) == (0.5, 1.0, 0.0)


def test_zero_fill_after_give_up_then_the_device_is_served_again() -> None:
    resume = threading.Event()

    def produce(push: Callable[[Any], None], stopping: threading.Event) -> None:
        push(np.full((1, 2), 5.0))
        resume.wait(10)
        push(np.full((1, 20), 7.0))
        stopping.wait()

    device = ProducerSource(SourceSpec("amp", "producer", Fraction(20), 2, (ChannelSpec("a", by_name("emg")),),
                                       {"callable": produce, "lost_after": 0.1, "give_up_after": 0.2}, "zero-fill"))
    hub = StreamHub([master(), device])
    hub.start_sources()
    emg = by_name("emg").flag
    try:
        wait_for(lambda: device.buffer.received == 2)
        tick = 0

        def emg_value() -> float | None:
            nonlocal tick
            produced = hub.produce(tick)
            flags, body = produced.flags, produced.body
            tick += 1
            signals = decode_packet(encode_header(len(body), flags, tick, 0, 0) + body).signals
            return float(signals[emg][0, 0]) if emg in signals else None

        assert emg_value() == 5.0
        wait_for(lambda: emg_value() == 0.0)  # given up: zeros, as configured
        resume.set()
        wait_for(lambda: emg_value() == 7.0)  # back: real samples again
        assert hub.source_health()[1].state != "failed"
    finally:
        hub.stop_sources()
