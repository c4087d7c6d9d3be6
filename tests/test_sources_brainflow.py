"""BrainFlow: the synthetic board (id -1) offline through config and the hub; failures name the section."""

from __future__ import annotations

import numpy as np
import pytest
from support import config_from_text, wait_for

from tia.config import ConfigError
from tia.protocol.packet import decode_packet, encode_header
from tia.protocol.signals import by_name
from tia.server.hub import StreamHub
from tia.sources import build_source
from tia.sources.brainflow_board import BrainFlowSource

brainflow = pytest.importorskip("brainflow", reason="brainflow is not installed; pip install '.[test]'")

SYNTHETIC = "[source:board]\ndriver = brainflow\nboard_id = SYNTHETIC_BOARD\nblocksize = 25\n"


def test_synthetic_board_layout_from_config() -> None:
    spec = config_from_text(SYNTHETIC).sources[0]
    assert spec.sampling_rate == 250
    kinds = [c.type.name for c in spec.channels]
    assert kinds == ["eeg"] * 16 + ["sensor"] * 6
    assert [c.label for c in spec.channels][:3] == ["Fz", "C3", "Cz"]  # the board's electrode names
    assert [c.label for c in spec.channels][16:] == ["accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z"]


def test_exg_type_and_sensor_rows_per_config() -> None:
    spec = config_from_text(SYNTHETIC.replace("board_id = SYNTHETIC_BOARD", "board_id = -1")
                            + "exg = emg\naccel = off\ngyro = off\n").sources[0]
    assert [c.type.name for c in spec.channels] == ["emg"] * 16


def test_listed_channels_rename_in_order() -> None:
    names = ", ".join(f"e{n}:ecg" for n in range(16))
    spec = config_from_text(SYNTHETIC + f"accel = off\ngyro = off\nchannels = {names}\n").sources[0]
    assert spec.channels[0].label == "e0" and spec.channels[0].type == by_name("ecg")


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ("channels = 3\ntype = eeg\n", "channels", "the board gives 22 rows"),
        ("rate = 500\n", "rate", "nothing is resampled"),
        ("exg = fnirs\n", "exg", "expected one of"),
        ("ip_port = many\n", "ip_port", "invalid value"),
    ],
)
def test_config_errors_name_section_and_key(extra: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_text(SYNTHETIC + extra)
    assert (info.value.section, info.value.key) == ("source:board", key)
    assert words in info.value.message


def test_unknown_board() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_text(SYNTHETIC.replace("SYNTHETIC_BOARD", "NO_SUCH_BOARD"))
    assert info.value.key == "board_id"
    with pytest.raises(ConfigError) as info:
        config_from_text(SYNTHETIC.replace("SYNTHETIC_BOARD", "123456"))
    assert info.value.key == "board_id" and "knows no board" in info.value.message


def test_synthetic_board_streams_complete_blocks_through_the_hub() -> None:
    config = config_from_text(SYNTHETIC + "gyro = off\n")
    source = build_source(config.sources[0])
    assert isinstance(source, BrainFlowSource)
    hub = StreamHub([source])
    hub.start_sources()
    try:
        wait_for(lambda: source.buffer.received >= 100)
        eeg, sensor = by_name("eeg").flag, by_name("sensor").flag
        got = []
        tick = 0

        def step() -> bool:
            nonlocal tick
            produced = hub.produce(tick)
            flags, body = produced.flags, produced.body
            tick += 1
            if flags:
                got.append(decode_packet(encode_header(len(body), flags, tick, 0, 0) + body))
            return len(got) >= 4

        wait_for(step)
        for packet in got:
            assert packet.signals[eeg].shape == (16, 25)
            assert packet.signals[sensor].shape == (3, 25)
            assert np.isfinite(packet.signals[eeg]).all()
        assert source.metrics()["dropped"] == 0
    finally:
        hub.stop_sources()


def test_a_board_that_cannot_be_opened_fails_the_source_and_the_rest_keeps_serving() -> None:
    config = config_from_text(
        "[source:eeg]\ndriver = ramp\nrate = 100\nblocksize = 4\nchannels = 1\ntype = emg\n"
        "[source:cyton]\ndriver = brainflow\nboard_id = CYTON_BOARD\nserial_port = /dev/tia-no-such-port\n"
        "blocksize = 10\n"
    )
    sources = [build_source(s) for s in config.sources]
    hub = StreamHub(sources)
    hub.start_sources()
    try:
        source = sources[1]
        assert isinstance(source, BrainFlowSource)
        wait_for(lambda: source._failure is not None)
        flags = hub.produce(0).flags
        assert flags == by_name("emg").flag  # stop-signal: the board's signals gone, the rest sent
        assert hub.source_health()[1].state == "failed"
    finally:
        hub.stop_sources()
