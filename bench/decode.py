"""W5: how fast each of our clients decodes, 64 channels, blocksize 1.

A minimal TiA server in another process answers the control requests and then
pushes pre-encoded packets as fast as the socket takes them; each client
decodes for a fixed time. ``python -m bench -w W5`` or ``python -m bench.decode``.
"""

from __future__ import annotations

import multiprocessing
import socket
import sys
import threading
import time
from typing import Any

import numpy as np

from tia.protocol.control import OK_REPLY, Command, ControlParser, build_error, build_message
from tia.protocol.metainfo import MetaInfo, SignalInfo
from tia.protocol.packet import encode_packet
from tia.protocol.signals import by_name

CHANNELS = 64
BATCH = 2000  # packets per pre-encoded chunk


def _metainfo() -> bytes:
    signal = SignalInfo(by_name("eeg"), 1000.0, 1, tuple(f"ch{n}" for n in range(1, CHANNELS + 1)))
    return MetaInfo(1000.0, 1, (signal,)).to_xml()


def _chunk(first: int) -> bytes:
    block = np.arange(CHANNELS, dtype=np.float32).reshape(CHANNELS, 1)
    return b"".join(encode_packet(first + i, first + i, 0, [(1, block)]) for i in range(BATCH))


def _serve(port_out: Any) -> None:
    """One client: control requests answered, then packets pushed until it leaves."""
    control_listener = socket.create_server(("127.0.0.1", 0))
    port_out.put(control_listener.getsockname()[1])
    control, _ = control_listener.accept()
    parser = ControlParser()
    data_listener = socket.create_server(("127.0.0.1", 0))
    template = bytearray(_chunk(0))
    started = threading.Event()

    def push() -> None:
        data, _ = data_listener.accept()
        started.wait()
        sent = 0
        try:
            while True:
                # renumber the pre-encoded chunk in place: ids and connection numbers consecutive
                for i in range(BATCH):
                    offset = i * (33 + 4 + 4 * CHANNELS)
                    number = (sent + i).to_bytes(8, "little")
                    template[offset + 9 : offset + 17] = number
                    template[offset + 17 : offset + 25] = number
                data.sendall(template)
                sent += BATCH
        except OSError:
            pass

    threading.Thread(target=push, daemon=True).start()
    meta = build_message(Command.METAINFO, content=_metainfo())
    while True:
        chunk = control.recv(65536)
        if not chunk:
            return
        for message in parser.feed(chunk):
            if message.command == Command.GET_METAINFO:
                control.sendall(meta)
            elif message.command == Command.GET_DATA_CONNECTION:
                control.sendall(build_message(Command.DATA_CONNECTION_PORT, str(data_listener.getsockname()[1])))
            elif message.command in (Command.START_DATA_TRANSMISSION, Command.CHECK_PROTOCOL_VERSION,
                                     Command.STOP_DATA_TRANSMISSION):
                started.set()
                control.sendall(OK_REPLY)
            else:
                control.sendall(build_error())


def _start_server() -> tuple[Any, int]:
    context = multiprocessing.get_context("fork")
    queue: Any = context.Queue()
    process = context.Process(target=_serve, args=(queue,), daemon=True)
    process.start()
    return process, int(queue.get(timeout=10))


def blocking_client(seconds: float) -> tuple[int, float]:
    from tia import TiAClient

    process, port = _start_server()
    try:
        client = TiAClient("127.0.0.1", port, timeout=10)
        client.connect()
        client.cmd_get_metainfo()
        _, data_port = client.cmd_get_data_connection_tcp()
        client.start_streaming_data_tcp("127.0.0.1", data_port)
        count, expected = 0, 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for packet in client.get_data():
                assert packet.packet_number == expected
                expected += 1
                count += 1
        elapsed = time.perf_counter() - start
        client.disconnect()
        return count, elapsed
    finally:
        process.kill()


def twisted_client(seconds: float) -> tuple[int, float]:
    from twisted.internet import reactor, task
    from twisted.internet.defer import ensureDeferred

    from tia.client import TiAStream

    process, port = _start_server()
    counter = {"count": 0, "start": 0.0, "end": 0.0}

    def on_packet(packet: Any) -> None:
        counter["count"] += 1

    async def run() -> None:
        stream = TiAStream(reactor, f"tcp:127.0.0.1:{port}", onPacket=on_packet)
        await stream.start()
        counter["count"] = 0
        counter["start"] = time.perf_counter()
        await task.deferLater(reactor, seconds, lambda: None)
        counter["end"] = time.perf_counter()
        final = counter["count"]
        stream.stop()
        counter["count"] = final

    try:
        done = ensureDeferred(run())
        done.addBoth(lambda _: reactor.stop())
        reactor.run()
        return int(counter["count"]), counter["end"] - counter["start"]
    finally:
        process.kill()


def main(seconds: float = 5.0) -> list[tuple[str, float, float]]:
    rows = []
    for name, runner in (("blocking TiAClient", blocking_client), ("Twisted TiAStream", twisted_client)):
        count, elapsed = runner(seconds)
        rows.append((name, count / elapsed, count * CHANNELS / elapsed))
    sys.stdout.write(f"{'W5 client':20} {'packets/s':>12} {'samples/s':>14}   (64 ch, blocksize 1)\n")
    for name, packets, samples in rows:
        sys.stdout.write(f"{name:20} {packets:12,.0f} {samples:14,.0f}\n")
    return rows


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)
