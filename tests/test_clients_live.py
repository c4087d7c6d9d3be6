"""Both clients against the real daemon on 127.0.0.1 (port 0): exact ramp values, no gaps."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from support import BLOCK, CHANNELS, SocketTestCase, ramp_config, ramp_values, stream_blocking, until
from twisted.internet import reactor, threads
from twisted.internet.defer import inlineCallbacks

from tia import TiAClient
from tia.client import TiAServerError, TiAStream, connectTiA
from tia.protocol.packet import DataPacket


class LiveClientTests(SocketTestCase):
    timeout = 60

    def setUp(self) -> None:
        self.serve(ramp_config(rate=1000, blocksize=BLOCK, channels=CHANNELS))

    def check(self, ids: list[int], numbers: list[int], blocks: list[Any]) -> None:
        self.assertEqual(numbers, list(range(len(numbers))))
        self.assertEqual(ids, list(range(ids[0], ids[0] + len(ids))))
        for packet_id, block in zip(ids, blocks, strict=True):
            np.testing.assert_array_equal(block, ramp_values(CHANNELS, packet_id * BLOCK, BLOCK))

    @inlineCallbacks
    def _stream(self, transport: Literal["TCP", "UDP"]) -> Any:
        packets: list[DataPacket] = []
        stream = TiAStream(reactor, f"tcp:127.0.0.1:{self.port}", transport=transport, onPacket=packets.append)
        meta = yield stream.start()
        self.assertEqual(meta.signal("eeg").num_channels, CHANNELS)
        yield until(lambda: len(packets) >= 30)
        yield stream.stop()
        self.check([p.packet_id for p in packets], [p.connection_number for p in packets],
                   [p.signals[1] for p in packets])

    def test_twisted_client_tcp(self) -> Any:
        return self._stream("TCP")

    def test_twisted_client_udp(self) -> Any:
        return self._stream("UDP")

    @inlineCallbacks
    def test_twisted_client_error_reply_carries_the_server_text(self) -> Any:
        control = yield connectTiA(reactor, f"tcp:127.0.0.1:{self.port}")
        with self.assertRaises(TiAServerError) as info:
            yield control.start()
        self.assertIn("GetDataConnection first", info.exception.text)
        yield control.close()

    @inlineCallbacks
    def test_blocking_client_tcp_and_udp(self) -> Any:
        def announces_the_ramp(client: TiAClient) -> None:
            assert client.cmd_check_protocol_version()
            assert client.cmd_get_metainfo()
            assert client.metainfo is not None and client.metainfo.signal("eeg").num_channels == CHANNELS

        def run(udp: bool) -> list[Any]:
            return stream_blocking(self.port, udp, check=announces_the_ramp)

        for udp in (False, True):
            packets = yield threads.deferToThread(run, udp)
            self.check([p.packet_id for p in packets], [p.packet_number for p in packets],
                       [p.arrays[0] for p in packets])
            self.assertEqual(list(packets[0].get_channel(0, 1)), ramp_values(CHANNELS, packets[0].packet_id * BLOCK,
                                                                            BLOCK)[1])

    @inlineCallbacks
    def test_blocking_client_error_reply_and_stop(self) -> Any:
        def run() -> tuple[bool, str | None, list[Any]]:
            client = TiAClient("127.0.0.1", self.port, timeout=5)
            assert client.connect()
            refused = client.stop_streaming_data()  # Stop before any data connection
            text = client.last_error
            ok, port = client.cmd_get_data_connection_tcp()
            assert ok and client.start_streaming_data_tcp("127.0.0.1", port)
            client.get_data()
            client.stop_streaming_data()
            after = client.get_data()  # the seed's semantics: no data connection, no packets
            client.disconnect()
            return refused, text, after

        refused, text, after = yield threads.deferToThread(run)
        self.assertFalse(refused)
        self.assertIn("GetDataConnection first", text or "")
        self.assertEqual(after, [])
