"""``tia lsl``: a TiA client republishing any TiA server's signals as LSL outlets.

The blocking client receives the packets; :class:`~tia.lsl.publisher.LSLPublisher`
pushes them. The time-stamp anchor is the first packet's arrival: the stamps
include that packet's network latency, and a drift between the remote
server's clock and ours is not corrected. Packets lost on the way are
reported on stderr. This side loads no server module.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from typing import TextIO

from tia.client.blocking import TiAClient, TiAError
from tia.client.sequence import Arrival, PacketSequence
from tia.client.tls import TLSSettings
from tia.lsl.publisher import ClockAnchor, LSLPublisher
from tia.protocol.signals import flags_in
from tia.sources.lsl import import_pylsl

__all__ = ["republish", "run_client_bridge"]


def republish(
    client: TiAClient,
    publisher: LSLPublisher,
    local_clock: Callable[[], float],
    seconds: float | None = None,
    timeout: float | None = None,
    err: TextIO | None = None,
) -> int:
    """Push what a started blocking client receives until ``seconds`` pass (or Ctrl-C); packets pushed."""
    err = err or sys.stderr
    metainfo = publisher.metainfo
    rate = Fraction(metainfo.master_sampling_rate).limit_denominator(1_000_000) / metainfo.master_block_size
    anchor = ClockAnchor(rate)
    deadline = math.inf if seconds is None else time.monotonic() + seconds
    pushed = 0
    sequence = PacketSequence()
    try:
        while time.monotonic() < deadline:
            batch = client.get_data(timeout=timeout)
            if not batch:
                raise TiAError("the server closed the data connection")
            for packet in batch:
                if anchor.first_id is None:
                    anchor.set(packet.packet_id, local_clock())
                expected = sequence.expected
                if sequence.check(packet.packet_number) is Arrival.GAP and expected is not None:
                    err.write(f"tia lsl: {packet.packet_number - expected} packets lost before "
                              f"packet id {packet.packet_id}\n")
                blocks = zip(flags_in(packet.flags), packet.arrays, strict=True)
                publisher.push(blocks, anchor(packet.packet_id))
                pushed += 1
    except KeyboardInterrupt:
        pass
    return pushed


def run_client_bridge(
    host: str, port: int, timeout: float, seconds: float | None, name: str, source_id: str | None,
    out: TextIO | None = None, *, tls: TLSSettings | None = None, sample_order: str = "channel-major",
) -> int:
    """``tia lsl``: connect to a TiA server and republish its signals as LSL outlets (over TLS with ``tls``)."""
    out = out or sys.stdout
    pylsl = import_pylsl()
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with TiAClient(host, port, timeout=timeout, tls=tls, sample_order=sample_order) as client:
        if not client.cmd_get_metainfo() or client.metainfo is None:
            raise TiAError(f"the server refused GetMetaInfo: {client.last_error}")
        publisher = LSLPublisher(pylsl, client.metainfo, name, source_id or f"tia-lsl@{where}")
        ok, data_port = client.cmd_get_data_connection_tcp()
        if not ok or not client.start_streaming_data_tcp(host, data_port):
            raise TiAError(f"cannot start the data stream: {client.last_error}")
        out.write(f"republishing {where} as LSL outlets: {'; '.join(publisher.describe())}\n")
        out.flush()
        try:
            pushed = republish(client, publisher, pylsl.local_clock, seconds, timeout)
        finally:
            publisher.close()
    out.write(f"pushed {pushed} packets\n")
    return 0
