"""One TiA client in a lab host, reporting what it sees as JSON lines on stdout.

Run by ``tests/netns.py`` (``Host.client``) inside a network namespace::

    python tests/netns_client.py '{"kind": "blocking", "host": "10.200.1.1", "transport": "TCP"}'

Kinds: ``blocking`` (``TiAClient``; with ``hold`` it reports its data port
and waits for a line on stdin before connecting there), ``stream`` (Twisted
``TiAStream``, with ``reconnect``, ``retry`` seconds and ``data_timeout``)
and ``idle`` (a control and a server-state connection, no data: a quiet
client). ``state`` adds a server-state connection. Every
0.1 s while something changed, and at the end (SIGTERM, or the data ended),
it prints its figures: packets, the packet ids seen, values that are not the
ramp the lab's server sends, packet ids repeated, and its client's own
counts of gaps, lost, late and repeated connection packet numbers; with
``numbers`` also every connection packet number in arrival order. Events
(``started``, ``resumed``, ``error``, ``closed``) are lines of their own.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
from typing import Any

import numpy as np

from tia.client import TiAClient, TiAError
from tia.client.sequence import PacketSequence
from tia.protocol.metainfo import MetaInfo

STATUS_SECONDS = 0.1


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


class Figures:
    """What the client received: counts, the ramp's values checked, packet ids, sequence counts."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.keep_numbers = bool(options.get("numbers"))
        self.packets = 0
        self.wrong = 0
        self.repeated_ids = 0
        self.first_id: int | None = None
        self.last_id: int | None = None
        self.numbers: list[int] = []
        self.resumes: list[dict[str, Any]] = []
        self.done: list[PacketSequence] = []  # sequences of earlier data connections
        self.sequence: PacketSequence | None = None
        self._seen: set[int] = set()
        self._changed = True
        self._ramp: tuple[np.ndarray, int] | None = None

    def set_metainfo(self, metainfo: MetaInfo) -> None:
        master = metainfo.signals[0]
        self._ramp = (np.arange(1, master.num_channels + 1, dtype=np.float64)[:, None] * 1000, master.block_size)

    def packet(self, packet_id: int, number: int, block: np.ndarray) -> None:
        if self.first_id is None:
            self.first_id = packet_id
        self.last_id = packet_id
        self.packets += 1
        if packet_id in self._seen:
            self.repeated_ids += 1
        self._seen.add(packet_id)
        if self.keep_numbers:
            self.numbers.append(number)
        if self._ramp is not None:
            base, size = self._ramp
            expected = base + (packet_id * size + np.arange(size)) % 1000
            if block.shape != expected.shape or not np.array_equal(block, expected):
                self.wrong += 1
        self._changed = True

    def new_epoch(self) -> None:
        """The server restarted: its packet ids start over."""
        self._seen.clear()

    def new_sequence(self, sequence: PacketSequence | None) -> None:
        if sequence is not self.sequence:
            if self.sequence is not None:
                self.done.append(self.sequence)
            self.sequence = sequence

    def report(self, event: str = "status", force: bool = False) -> None:
        if not (force or self._changed):
            return
        self._changed = False
        sequences = [*self.done, *([self.sequence] if self.sequence is not None else [])]
        counts = {name: sum(getattr(s, name) for s in sequences)
                  for name in ("received", "gaps", "lost", "reordered", "duplicates")}
        fields: dict[str, Any] = {
            "packets": self.packets, "first_id": self.first_id, "last_id": self.last_id, "wrong": self.wrong,
            "repeated_ids": self.repeated_ids, "resumes": self.resumes, **counts,
        }
        if self.keep_numbers:
            fields["numbers"] = self.numbers
        emit(event, **fields)


def run_blocking(options: dict[str, Any], figures: Figures, stopping: list[bool]) -> int:
    host, port, udp = options["host"], int(options.get("port", 9000)), options.get("transport") == "UDP"
    client = TiAClient(host, port, timeout=float(options.get("timeout", 3.0)))
    state: socket.socket | None = None
    try:
        if not client.connect():
            emit("error", error=client.last_error)
            return 1
        if not client.cmd_get_metainfo() or client.metainfo is None:
            emit("error", error=client.last_error)
            return 1
        figures.set_metainfo(client.metainfo)
        if options.get("state") or options.get("kind") == "idle":
            ok, state_port = client.cmd_get_server_state_connection()
            state = socket.create_connection((host, state_port), timeout=3)
        if options.get("kind") == "idle":
            emit("started")
            while not stopping:
                time.sleep(STATUS_SECONDS)
            return 0
        ok, data_port = client.cmd_get_data_connection_udp() if udp else client.cmd_get_data_connection_tcp()
        if options.get("hold"):  # say the data port, then wait for a line on stdin before connecting to it
            emit("port", port=data_port)
            sys.stdin.readline()
        started = (client.start_streaming_data_udp if udp else client.start_streaming_data_tcp)(host, data_port)
        if not (ok and started):
            emit("error", error=client.last_error)
            return 1
        figures.new_sequence(client.sequence)
        emit("started")
        last_report = 0.0
        while not stopping:
            try:
                batch = client.get_data(timeout=STATUS_SECONDS)
            except TiAError as error:
                if "no data packet" not in str(error):
                    emit("error", error=str(error))
                    return 1
                batch = []
            else:
                if not batch:
                    emit("closed")
                    return 0
            for packet in batch:
                figures.packet(packet.packet_id, packet.packet_number, packet.arrays[0])
            if time.monotonic() - last_report >= STATUS_SECONDS:
                last_report = time.monotonic()
                figures.report()
        return 0
    except (TiAError, OSError) as error:
        emit("error", error=str(error))
        return 1
    finally:
        if state is not None:
            state.close()
        client.disconnect()


def run_stream(options: dict[str, Any], figures: Figures) -> int:
    from twisted.internet import reactor, task
    from twisted.python.failure import Failure

    from tia.client.stream import TiAStream
    from tia.protocol.packet import DataPacket

    epoch_last: list[int | None] = [None]

    def on_packet(packet: DataPacket) -> None:
        figures.new_sequence(stream.sequence)
        figures.packet(packet.packet_id, packet.connection_number, packet.signals[1])

    def on_reconnect(seconds: float) -> None:
        figures.new_sequence(None)
        figures.resumes.append({"last_id": figures.last_id, "seconds": seconds, "ticks_lost": stream.ticks_lost})
        epoch_last[0] = figures.last_id
        emit("resumed", seconds=seconds, ticks_lost=stream.ticks_lost, last_id=figures.last_id)

    def on_first_after_resume(packet: DataPacket) -> None:
        resume = figures.resumes[-1] if figures.resumes else None
        if resume is not None and "first_id" not in resume:
            resume["first_id"] = packet.packet_id
            if epoch_last[0] is not None and packet.packet_id <= epoch_last[0]:
                figures.new_epoch()  # the server restarted: its ids start over

    def packet_handler(packet: DataPacket) -> None:
        on_first_after_resume(packet)
        on_packet(packet)

    def on_disconnect(reason: Failure) -> None:
        emit("closed", error=reason.getErrorMessage())

    retry = float(options.get("retry", 1.0))
    stream = TiAStream(
        reactor, f"tcp:{options['host']}:{int(options.get('port', 9000))}", options.get("transport", "TCP"),
        onPacket=packet_handler, onReconnect=on_reconnect, onDisconnect=on_disconnect,
        onServerState=(lambda state: emit("state", state=state)) if options.get("state") else None,
        reconnect=bool(options.get("reconnect")), retryPolicy=lambda attempt: retry,
        dataTimeout=options.get("data_timeout", 10.0), timeout=float(options.get("timeout", 3.0)),
    )
    status = task.LoopingCall(figures.report)
    exit_code = [0]

    def started(metainfo: MetaInfo) -> None:
        figures.set_metainfo(metainfo)
        emit("started")
        status.start(STATUS_SECONDS, now=False)

    def failed(failure: Failure) -> None:
        emit("error", error=failure.getErrorMessage())
        exit_code[0] = 1
        reactor.stop()  # type: ignore[attr-defined]

    stream.start().addCallbacks(started, failed)
    reactor.addSystemEventTrigger("before", "shutdown", stream.stop)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]  # SIGTERM stops it
    return exit_code[0]


def main() -> None:
    options: dict[str, Any] = json.loads(sys.argv[1])
    figures = Figures(options)
    stopping: list[bool] = []
    code = 0
    if options.get("kind") == "stream":
        code = run_stream(options, figures)
    else:
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        code = run_blocking(options, figures, stopping)
    figures.report("final", force=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
