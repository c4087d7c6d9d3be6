"""CPU cost of customized connections: ``python -m bench.custom_tick [--subscribers N] [--sockets]``.

Times ``StreamHub.run`` in-process (no sockets, no reactor) with N plain
subscribers, then with N connections asking for the same customization (one
shared ``CustomStream`` feeding N of the same kind of subscriber), and prints
microseconds per tick and per subscriber. The
subscribers build their 33-byte header exactly as the real data channels do
and drop the bytes, so the figures are the hub's and the customization's own
cost, without the kernel's socket work.

``--sockets`` also runs the real daemon (``twistd -n tia``) in a child process
with N TCP clients, plain then customized, and reads the server's CPU time
from /proc: the whole cost of a connection, socket writes included.
"""

from __future__ import annotations

import argparse
import configparser
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from bench.__main__ import request
from tia.config import parse_config
from tia.protocol.custom import CustomSignalInfo, CustomSpec, build_custom_xml
from tia.protocol.metainfo import MetaInfo
from tia.protocol.packet import encode_header
from tia.server.custom import CustomStreams
from tia.server.hub import StreamHub
from tia.server.tick import Tick
from tia.sources import build_source

EIGHT = [1, 9, 17, 25, 33, 41, 49, 57]
CASES: dict[str, tuple[int, int, int, CustomSpec]] = {
    # name: (channels, rate, block size, custom spec)
    "64ch@1000/1 select 8": (64, 1000, 1, {"eeg": {"channels": EIGHT}}),
    "64ch@1000/8 all /4": (64, 1000, 8, {"eeg": {"downsample": 4}}),
    "64ch@1000/8 select 8 /4": (64, 1000, 8, {"eeg": {"channels": EIGHT, "downsample": 4}}),
    "64ch@1024/16 select 8 /16": (64, 1024, 16, {"eeg": {"channels": EIGHT, "downsample": 16}}),
}


class NullSubscriber:
    """Does what a data channel does before the socket: number the packet, build its header."""

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0

    def deliver(self, ticks: Sequence[Tick]) -> None:
        for tick in ticks:
            header = encode_header(len(tick.body), tick.flags, tick.packet_id, self.packets, tick.timestamp)
            self.packets += 1
            self.bytes += len(header) + len(tick.body)


def hub_for(channels: int, rate: int, block: int) -> StreamHub:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(
        f"[source:eeg]\ndriver = sine\nrate = {rate}\nblocksize = {block}\nchannels = {channels}\ntype = eeg\n"
    )
    config = parse_config(parser, "bench")
    return StreamHub([build_source(s) for s in config.sources], config.subject)


def per_tick(hub: StreamHub, ticks: int) -> float:
    """Microseconds per tick (``StreamHub.run``), best of three runs."""
    best = float("inf")
    tick = 0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(ticks):
            hub.run(tick)
            tick += 1
        best = min(best, (time.perf_counter() - start) / ticks * 1e6)
    return best


def measure(name: str, subscribers: int, ticks: int, report: Callable[[str], None]) -> None:
    channels, rate, block, spec = CASES[name]
    plain_hub = hub_for(channels, rate, block)
    for _ in range(subscribers):
        plain_hub.subscribe(NullSubscriber())
    plain = per_tick(plain_hub, ticks)

    custom_hub = hub_for(channels, rate, block)
    custom = CustomSignalInfo.from_spec(spec, custom_hub.metainfo)
    streams = CustomStreams(custom_hub)
    for _ in range(subscribers):
        streams.subscribe(custom, NullSubscriber())  # identical requests: one shared filter
    customized = per_tick(custom_hub, ticks)

    empty_hub = hub_for(channels, rate, block)
    base = per_tick(empty_hub, ticks)  # reading the source and encoding once
    packets_per_second = rate / block
    plain_each = (plain - base) / subscribers
    custom_each = (customized - base) / subscribers
    report(
        f"{name:28s} base {base:7.1f} us/tick | {subscribers} plain {plain:8.1f} us/tick"
        f" ({plain_each:5.2f} us each) | {subscribers} custom {customized:8.1f} us/tick"
        f" ({custom_each:6.2f} us each, x{custom_each / plain_each:4.1f})"
        f" | one custom connection = {custom_each * packets_per_second / 1e4:.3f} % of a core"
        f" vs {plain_each * packets_per_second / 1e4:.3f} %"
    )


# ----------------------------------------------------------------- the real daemon

SOCKET_CASES: dict[str, tuple[str, CustomSpec]] = {
    # name: (--signal of twistd, custom spec)
    "64ch@1000/8 select 8 /4": ("eeg:64:1000:8:sine", {"eeg": {"channels": EIGHT, "downsample": 4}}),
    "64ch@1000/1 select 8": ("eeg:64:1000:1:sine", {"eeg": {"channels": EIGHT}}),
}


def _open_client(port: int, spec: CustomSpec | None) -> tuple[socket.socket, socket.socket]:
    """A streaming client (customized by ``spec``): its control and data sockets."""
    control = socket.create_connection(("127.0.0.1", port))
    if spec is not None:
        server = MetaInfo.from_xml(request(control, "GetMetaInfo").content)
        request(control, "SetCustomSignalInfo", content=build_custom_xml(spec, server))
    reply = request(control, "GetDataConnection", "TCP")
    data = socket.create_connection(("127.0.0.1", int(reply.parameter or 0)))
    request(control, "StartDataTransmission")
    data.setblocking(False)
    return control, data


def _drain(datas: list[socket.socket], stop: threading.Event, received: list[int]) -> None:
    selector = selectors.DefaultSelector()
    for data in datas:
        selector.register(data, selectors.EVENT_READ)
    while not stop.is_set():
        for key, _ in selector.select(timeout=0.05):
            try:
                received[0] += len(cast(socket.socket, key.fileobj).recv(1 << 20))
            except BlockingIOError:
                pass


def _server_cpu(signal: str, clients: int, spec: CustomSpec | None, seconds: float) -> tuple[float, float]:
    """The daemon's CPU (% of one core) with ``clients`` clients, and the bytes/s they received."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    twistd = Path(sys.executable).with_name("twistd")
    command = str(twistd) if twistd.exists() else (shutil.which("twistd") or "twistd")
    log = Path(tempfile.gettempdir()) / "custom_tick_twistd.log"
    process = subprocess.Popen(
        [command, "-n", "--pidfile=", f"--logfile={log}", "tia", "--port", str(port), "--signal", signal],
        cwd=tempfile.gettempdir(),
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start, see {log}") from None
                time.sleep(0.1)
        pairs = [_open_client(port, spec) for _ in range(clients)]
        stop, received = threading.Event(), [0]
        drainer = threading.Thread(target=_drain, args=([d for _, d in pairs], stop, received))
        drainer.start()
        time.sleep(1.0)  # warm-up: filters designed, buffers settled
        cpu, bytes_before, start = _cpu_seconds(process.pid), received[0], time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - start
        used = _cpu_seconds(process.pid) - cpu
        rate = (received[0] - bytes_before) / elapsed
        stop.set()
        drainer.join()
        for control, data in pairs:
            data.close()
            control.close()
        return 100 * used / elapsed, rate
    finally:
        process.terminate()
        process.wait(10)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")




def measure_sockets(name: str, clients: int, seconds: float, report: Callable[[str], None]) -> None:
    signal, spec = SOCKET_CASES[name]
    idle, _ = _server_cpu(signal, 0, None, seconds)
    plain, plain_rate = _server_cpu(signal, clients, None, seconds)
    custom, custom_rate = _server_cpu(signal, clients, spec, seconds)
    report(
        f"{name:28s} twistd CPU: idle {idle:5.1f} % | {clients} plain {plain:5.1f} %"
        f" ({(plain - idle) / clients:5.2f} % each, {plain_rate / clients / 1e3:6.1f} kB/s each)"
        f" | {clients} custom {custom:5.1f} % ({(custom - idle) / clients:5.2f} % each,"
        f" {custom_rate / clients / 1e3:6.1f} kB/s each)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--ticks", type=int, default=2000)
    parser.add_argument("--sockets", action="store_true", help="also measure the real daemon over TCP")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per --sockets run")
    options = parser.parse_args()
    for name in CASES:
        measure(name, options.subscribers, options.ticks, print)
    if options.sockets:
        for name in SOCKET_CASES:
            measure_sockets(name, options.subscribers, options.seconds, print)


if __name__ == "__main__":
    main()
