"""Custom signal info end to end on real sockets (127.0.0.1): the reference custom client's
request, both of our clients, a plain client beside them, TCP and unicast UDP, one server."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import signal
from support import ControlClient, SocketTestCase, all_arrived, config_from_text, port_of, ramp_values, until
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred, inlineCallbacks

from tia.client import TiAServerError, TiAStream, connectTiA
from tia.client.blocking import TiAClient
from tia.protocol.control import ControlMessage
from tia.protocol.custom import CustomSignalInfoError
from tia.protocol.metainfo import MetaInfo
from tia.protocol.packet import DataPacket
from tia.protocol.signals import flags_in
from tia.server.custom import decimation_filter

EEG_CHANNELS, EEG_BLOCK, BP_CHANNELS, BP_BLOCK = 16, 8, 2, 2

CONFIG = f"""
[server]
control = tcp:0:interface=127.0.0.1

[udp]
mode = unicast

[source:eeg]
driver = ramp
rate = 1000
blocksize = {EEG_BLOCK}
channels = {EEG_CHANNELS}
type = eeg

[source:bp]
driver = ramp
rate = 250
blocksize = {BP_BLOCK}
channels = BP1:bp, BP2:bp
"""

# Built the way the reference's custom client builds it: tabs, the server's rate and
# block size, the server's channel numbers and labels, downsamplingFactor before numChannels.
REFERENCE_REQUEST = (
    b'<tiaCustomSignalInfo version="1.0">\n'
    b'\t<signal type="eeg" samplingRate="1000" blockSize="8" downsamplingFactor="1" numChannels="2">\n'
    b'\t\t<channel nr="3" label="eeg3"/>\n'
    b'\t\t<channel nr="1" label="eeg1"/>\n'
    b"\t</signal>\n"
    b'\t<signal type="bp" samplingRate="250" blockSize="2" downsamplingFactor="1" numChannels="1">\n'
    b'\t\t<channel nr="2" label="BP2"/>\n'
    b"\t</signal>\n"
    b"</tiaCustomSignalInfo>\n"
)


def with_eeg_factor(factor: int) -> bytes:
    old = b'downsamplingFactor="1" numChannels="2"'
    return REFERENCE_REQUEST.replace(old, b'downsamplingFactor="%d" numChannels="2"' % factor)


def eeg_ramp(first_tick: int, ticks: int) -> np.ndarray:
    return np.asarray(ramp_values(EEG_CHANNELS, first_tick * EEG_BLOCK, ticks * EEG_BLOCK), dtype=np.float32)


def decimated_reference(rows: np.ndarray, factor: int) -> np.ndarray:
    """scipy over the whole received span at once, primed with its first sample as the server does."""
    taps = decimation_filter(factor)
    zi = signal.lfilter_zi(taps, 1.0)
    out = [signal.lfilter(taps, 1.0, row.astype(np.float64), zi=zi * float(row[0]))[0] for row in rows]
    return np.asarray(out)[:, ::factor]


def assert_gap_free(packets: list[DataPacket]) -> None:
    assert packets
    assert [p.connection_number for p in packets] == list(range(len(packets)))
    first = packets[0].packet_id
    assert [p.packet_id for p in packets] == list(range(first, first + len(packets)))
    assert all(p.timestamp == p.packet_id * 8000 for p in packets)  # 125 packets/s


def assert_plain(packets: list[DataPacket]) -> None:
    assert_gap_free(packets)
    for packet in packets:
        assert packet.flags == 0x21
        np.testing.assert_array_equal(
            packet.signals[1], ramp_values(EEG_CHANNELS, packet.packet_id * EEG_BLOCK, EEG_BLOCK)
        )
        np.testing.assert_array_equal(
            packet.signals[0x20], ramp_values(BP_CHANNELS, packet.packet_id * BP_BLOCK, BP_BLOCK)
        )


def assert_reference_selection(packets: list[DataPacket]) -> None:
    """What REFERENCE_REQUEST asked for: eeg channels 3 then 1, bp channel 2, exact."""
    assert_gap_free(packets)
    for packet in packets:
        assert packet.flags == 0x21
        eeg = ramp_values(EEG_CHANNELS, packet.packet_id * EEG_BLOCK, EEG_BLOCK)
        np.testing.assert_array_equal(packet.signals[1], [eeg[2], eeg[0]])
        bp = ramp_values(BP_CHANNELS, packet.packet_id * BP_BLOCK, BP_BLOCK)
        np.testing.assert_array_equal(packet.signals[0x20], [bp[1]])


def assert_decimated(packets: list[DataPacket], channels: list[int], factor: int) -> None:
    """eeg only, the given 1-based channels, low-passed and decimated exactly as scipy does it."""
    assert_gap_free(packets)
    assert all(p.flags == 0x01 and p.signals[1].shape == (len(channels), EEG_BLOCK // factor) for p in packets)
    received = np.concatenate([p.signals[1] for p in packets], axis=1)
    sent = eeg_ramp(packets[0].packet_id, len(packets))[[c - 1 for c in channels]]
    np.testing.assert_allclose(received, decimated_reference(sent, factor), rtol=1e-6, atol=2e-3)


class CustomServerTestCase(SocketTestCase):
    timeout = 30
    config = CONFIG

    def setUp(self) -> None:
        self.serve(config_from_text(self.config))

    def customize(self, control: ControlClient, content: bytes) -> Deferred[ControlMessage]:
        """SetCustomSignalInfo with content, as the reference's client sends it; fires with the reply."""
        return control.request("SetCustomSignalInfo", content)


class ThreeClientsTests(CustomServerTestCase):
    @inlineCallbacks
    def test_two_customized_clients_and_a_plain_one_on_one_server(self) -> Any:
        # A: the reference custom client's exchange, byte for byte where it matters
        reference = yield self.control()
        self.assertEqual((yield self.customize(reference, REFERENCE_REQUEST)).command, "OK")
        meta = MetaInfo.from_xml((yield reference.request("GetMetaInfo")).content)
        self.assertEqual(meta.signal("eeg").labels, ("eeg3", "eeg1"))
        self.assertEqual(meta.signal("bp").labels, ("BP2",))
        reference_port = port_of((yield reference.request("GetDataConnection:TCP")))
        reference_data = yield self.data(reference_port)
        yield reference.request("StartDataTransmission")

        # B: our Twisted client asks for two channels at a quarter of the rate
        received: list[DataPacket] = []
        stream = TiAStream(
            reactor, f"tcp:127.0.0.1:{self.port}", onPacket=received.append,
            customize={"eeg": {"channels": [16, 2], "downsample": 4}},
        )
        self.addCleanup(stream.stop)
        stream_meta = yield stream.start()
        eeg = stream_meta.signal("eeg")
        self.assertEqual((eeg.sampling_rate, eeg.block_size, eeg.labels), (250, 2, ("eeg16", "eeg2")))
        self.assertEqual([s.type.name for s in stream_meta.signals], ["eeg"])
        self.assertEqual((stream_meta.master_sampling_rate, stream_meta.master_block_size), (250, 2))

        # C: a plain client, everything as usual
        plain = yield self.control()
        plain_port = port_of((yield plain.request("GetDataConnection:TCP")))
        plain_data = yield self.data(plain_port)
        yield plain.request("StartDataTransmission")

        yield plain_data.wait_for(40)
        yield reference_data.wait_for(40)
        yield until(lambda: len(received) >= 40)
        yield stream.stop()

        assert_plain(plain_data.packets)
        assert_reference_selection(reference_data.packets)
        assert_decimated(received, [16, 2], 4)
        # all three see the same ticks at the same packet rate
        common = set(p.packet_id for p in plain_data.packets) & set(p.packet_id for p in received)
        self.assertGreater(len(common), 10)

    @inlineCallbacks
    def test_refusals_keep_the_connection_usable(self) -> Any:
        control = yield self.control()
        reply = yield self.customize(control, with_eeg_factor(3))
        self.assertEqual(reply.command, "ValidationError")  # what the reference's client expects
        self.assertIn("does not divide its block size of 8 samples", reply.error_text())
        self.assertEqual((yield self.customize(control, REFERENCE_REQUEST)).command, "OK")
        reply = yield self.customize(control, REFERENCE_REQUEST)
        self.assertEqual(reply.command, "Error")
        self.assertEqual(reply.error_text(), "this connection already has a custom signal info; it cannot be changed")
        port = port_of((yield control.request("GetDataConnection:TCP")))
        collector = yield self.data(port)
        yield control.request("StartDataTransmission")
        yield collector.wait_for(10)
        assert_reference_selection(collector.packets)

    @inlineCallbacks
    def test_twisted_control_customize_and_its_errors(self) -> Any:
        control = yield connectTiA(reactor, f"tcp:127.0.0.1:{self.port}")
        self.addCleanup(control.close)
        with self.assertRaises(CustomSignalInfoError):
            yield control.customize({"eeg": {"downsample": 3}})  # checked before anything is sent
        yield control.customize({"bp": {"downsample": 2}})
        meta = yield control.getMetaInfo()
        self.assertEqual([(s.type.name, s.sampling_rate, s.block_size) for s in meta.signals], [("bp", 125, 1)])
        with self.assertRaises(TiAServerError) as caught:
            yield control.customize({"bp": {}})
        self.assertIn("already has a custom signal info", caught.exception.text)

    @inlineCallbacks
    def test_stop_and_start_again_restarts_the_filter_cleanly(self) -> Any:
        control = yield self.control()
        self.assertEqual((yield self.customize(control, with_eeg_factor(2))).command, "OK")
        port = port_of((yield control.request("GetDataConnection:TCP")))
        collector = yield self.data(port)
        yield control.request("StartDataTransmission")
        yield collector.wait_for(10)
        yield control.request("StopDataTransmission")
        yield all_arrived(collector.packets, (yield self.session(control)).tcp_data)  # what was in flight
        before = len(collector.packets)
        yield control.request("StartDataTransmission")
        yield collector.wait_for(before + 10)
        first, second = collector.packets[:before], collector.packets[before:]
        self.assertEqual([p.connection_number for p in collector.packets], list(range(len(collector.packets))))
        for part in (first, second):  # each run equals scipy started afresh at its first tick
            received = np.concatenate([p.signals[1] for p in part], axis=1)
            sent = eeg_ramp(part[0].packet_id, len(part))[[2, 0]]
            np.testing.assert_allclose(received, decimated_reference(sent, 2), rtol=1e-6, atol=2e-3)


class BlockingClientTests(CustomServerTestCase):
    @inlineCallbacks
    def test_blocking_client_customize_end_to_end(self) -> Any:
        def run() -> tuple[MetaInfo, list[DataPacket], list[str | None]]:
            errors: list[str | None] = []
            with TiAClient("127.0.0.1", self.port, timeout=5) as client:
                assert not client.customize({"eeg": {"downsample": 3}})  # does not fit: nothing sent
                errors.append(client.last_error)
                assert client.customize({"eeg": {"channels": ["eeg5", 9], "downsample": 2}, "bp": {"channels": [2]}})
                assert client.metainfo is not None
                metainfo = client.metainfo
                assert client.cmd_get_metainfo() and client.metainfo == metainfo  # stays customized
                assert not client.customize({"eeg": {}})  # refused by the server: one per connection
                errors.append(client.last_error)
                ok, port = client.cmd_get_data_connection_tcp()
                assert ok
                assert client.start_streaming_data_tcp("127.0.0.1", port)
                packets: list[DataPacket] = []
                while len(packets) < 30:
                    for packet in client.get_data():
                        signals = dict(zip(flags_in(packet.flags), packet.arrays, strict=True))
                        packets.append(
                            DataPacket(packet.packet_id, packet.packet_number, packet.timestamp, packet.flags, signals)
                        )
                assert client.stop_streaming_data()
            return metainfo, packets, errors

        metainfo, packets, errors = yield threads.deferToThread(run)
        self.assertIn("does not divide its block size of 8 samples", errors[0] or "")
        self.assertEqual(errors[1], "this connection already has a custom signal info; it cannot be changed")
        self.assertEqual(metainfo.signal("eeg").labels, ("eeg5", "eeg9"))
        self.assertEqual((metainfo.signal("eeg").sampling_rate, metainfo.signal("eeg").block_size), (500, 4))
        self.assertEqual(metainfo.signal("bp").labels, ("BP2",))
        assert_gap_free(packets)
        received = np.concatenate([p.signals[1] for p in packets], axis=1)
        sent = eeg_ramp(packets[0].packet_id, len(packets))[[4, 8]]
        np.testing.assert_allclose(received, decimated_reference(sent, 2), rtol=1e-6, atol=2e-3)
        for packet in packets:
            bp = ramp_values(BP_CHANNELS, packet.packet_id * BP_BLOCK, BP_BLOCK)
            np.testing.assert_array_equal(packet.signals[0x20], [bp[1]])

    @inlineCallbacks
    def test_blocking_customize_after_the_data_connection_is_refused(self) -> Any:
        def run() -> tuple[bool, str | None]:
            with TiAClient("127.0.0.1", self.port, timeout=5) as client:
                assert client.cmd_get_data_connection_tcp()[0]
                return client.customize({"eeg": {}}), client.last_error

        ok, error = yield threads.deferToThread(run)
        self.assertFalse(ok)
        self.assertEqual(error, "SetCustomSignalInfo must come before GetDataConnection")


class UnicastUDPTests(CustomServerTestCase):
    @inlineCallbacks
    def test_customized_unicast_udp(self) -> Any:
        control = yield self.control()
        self.assertEqual((yield self.customize(control, REFERENCE_REQUEST)).command, "OK")
        port = port_of((yield control.request("GetDataConnection:UDP")))
        receiver = self.udp_receiver(port)
        yield control.request("StartDataTransmission")
        yield until(lambda: len(receiver.packets) >= 20)
        yield control.request("StopDataTransmission")
        assert_reference_selection(receiver.packets)  # loopback does not lose datagrams at this rate


class BroadcastTests(CustomServerTestCase):
    config = CONFIG.replace("mode = unicast", "mode = broadcast\naddress = 127.0.0.255\nport = 9")

    @inlineCallbacks
    def test_broadcast_refuses_custom_info_with_the_reason(self) -> Any:
        control = yield self.control()
        self.assertEqual((yield self.customize(control, REFERENCE_REQUEST)).command, "OK")
        reply = yield control.request("GetDataConnection:UDP")
        self.assertEqual(reply.command, "Error")
        self.assertEqual(
            reply.error_text(),
            "custom signal info cannot be sent over UDP broadcast: all UDP clients of this server"
            " share one datagram stream; ask for TCP instead",
        )
        port = port_of((yield control.request("GetDataConnection:TCP")))
        collector = yield self.data(port)
        yield control.request("StartDataTransmission")
        yield collector.wait_for(5)
        assert_reference_selection(collector.packets)
