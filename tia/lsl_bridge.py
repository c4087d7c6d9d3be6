"""TiA signals as Lab Streaming Layer outlets: from our own server, or from any TiA server.

:class:`LSLPublisher` owns one outlet per TiA signal (name ``NAME-TYPE``,
LSL content type, float32 channels with their labels and units in the
description, the signal's nominal rate; aperiodic signals get irregular
outlets) and pushes decoded packets as whole chunks.

Time stamps. TiA packet ids count the server's ticks, which run on a fixed
grid (``packet id / packet rate`` seconds after the server started). The
bridge anchors that grid once, at the first packet it sees, to LSL's
``local_clock()``: packet ``p`` is stamped ``anchor + (p - p0) / packet
rate``, and sample ``j`` of its block ``1 / rate`` later per sample, so the
stamps are exactly regular and follow the tick grid. In the server
(:class:`LSLOutletSink`) the anchor is the monotonic time at which the hub
sent that first tick, moved onto LSL's clock; the tick grid runs on the same
monotonic clock, so the two never drift apart. ``tia lsl`` anchors at the
first packet's arrival: the stamps include that packet's network latency,
and a drift between the remote server's clock and ours is not corrected.
"""

from __future__ import annotations

import math
import socket
import sys
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
from twisted.application.service import Service
from twisted.internet.defer import Deferred

from tia.client.blocking import TiAClient, TiAError
from tia.client.tls import TLSSettings
from tia.config import LSLOutletConfig
from tia.protocol.metainfo import MetaInfo, SignalInfo
from tia.protocol.packet import DataPacket
from tia.protocol.signals import flags_in
from tia.recording import channel_names, physical_unit
from tia.server.recorder import QueueSink
from tia.server.tick import Tick
from tia.sources.lsl import import_pylsl

if TYPE_CHECKING:
    from tia.server.hub import StreamHub
    from tia.server.service import TiAService

__all__ = ["ClockAnchor", "LSLOutletSink", "LSLPublisher", "lsl_type", "republish", "run_client_bridge"]

# LSL content types (the XDF meta-data conventions) of the TiA types that have one.
_LSL_TYPES = {
    "eeg": "EEG", "emg": "EMG", "eog": "EOG", "ecg": "ECG", "nirs": "NIRS", "fmri": "fMRI",
    "hr": "HeartRate", "bp": "BloodPressure", "event": "Markers", "button": "Markers",
    "keycode": "Markers", "mouse-button": "Markers", "axis": "Axis",
}
_LSL_UNITS = {"uV": "microvolts"}
ERROR_LOG_INTERVAL = 10.0


def lsl_type(signal: SignalInfo) -> str:
    return _LSL_TYPES.get(signal.type.name, signal.type.name)


class ClockAnchor:
    """LSL time of packet ids: fixed at the first packet, then on the tick grid."""

    def __init__(self, packet_rate: Fraction) -> None:
        self.packet_rate = packet_rate
        self.first_id: int | None = None
        self.anchor = 0.0

    def set(self, packet_id: int, lsl_time: float) -> None:
        self.first_id, self.anchor = packet_id, lsl_time

    def __call__(self, packet_id: int) -> float:
        assert self.first_id is not None
        return self.anchor + float(Fraction(packet_id - self.first_id) / self.packet_rate)


class LSLPublisher:
    """One LSL outlet per signal of ``metainfo``; ``push`` sends a packet's blocks."""

    def __init__(self, pylsl: Any, metainfo: MetaInfo, name: str, source_id: str) -> None:
        self.pylsl = pylsl
        self.metainfo = metainfo
        self.outlets: dict[int, Any] = {}
        self.signals: dict[int, SignalInfo] = {s.flag: s for s in metainfo.signals}
        self.names = {s.flag: f"{name}-{s.type.name}" for s in metainfo.signals}
        for signal in metainfo.signals:
            self.outlets[signal.flag] = pylsl.StreamOutlet(
                self._info(signal, source_id), chunk_size=0 if signal.type.aperiodic else signal.block_size
            )

    def _info(self, signal: SignalInfo, source_id: str) -> Any:
        pylsl = self.pylsl
        kind = lsl_type(signal)
        info = pylsl.StreamInfo(
            self.names[signal.flag], kind, signal.num_channels,
            0.0 if signal.type.aperiodic else float(signal.sampling_rate),
            pylsl.cf_float32, f"{source_id}/{signal.type.name}",
        )
        description = info.desc()
        unit = physical_unit(signal)
        channels = description.append_child("channels")
        for label in channel_names(signal):
            channel = channels.append_child("channel")
            channel.append_child_value("label", label)
            channel.append_child_value("unit", _LSL_UNITS.get(unit, unit))
            channel.append_child_value("type", kind)
        description.append_child_value("manufacturer", "txtia (TOBI Interface A bridge)")
        description.append_child_value("tia_type", signal.type.name)
        if self.metainfo.subject.id:
            description.append_child("subject").append_child_value("id", self.metainfo.subject.id)
        return info

    def push(self, packet: DataPacket, packet_time: float) -> None:
        """Push every block of ``packet``; ``packet_time`` is the LSL time of its first sample."""
        for flag, block in packet.signals.items():
            outlet = self.outlets.get(flag)
            signal = self.signals.get(flag)
            if outlet is None or signal is None:
                continue
            if signal.type.aperiodic:
                for column in range(block.shape[1]):  # irregular: each value at its packet's time
                    outlet.push_sample(np.ascontiguousarray(block[:, column]), packet_time)
            else:
                last = packet_time + (block.shape[1] - 1) / signal.sampling_rate
                outlet.push_chunk(np.ascontiguousarray(block.T), last)

    def describe(self) -> list[str]:
        return [
            f"{self.names[s.flag]} ({lsl_type(s)}, {s.num_channels} ch, "
            f"{'irregular' if s.type.aperiodic else f'{s.sampling_rate:g} Hz'})"
            for s in self.metainfo.signals
        ]

    def close(self) -> None:
        """Drop the outlets (liblsl destroys them with their last reference)."""
        self.outlets.clear()


def default_source_id(control: str) -> str:
    """Stable across restarts (so LSL inlets reconnect): this host and the control endpoint."""
    return f"txtia@{socket.gethostname()}:{control}"


class LSLOutletSink(QueueSink):
    """The server's signals as LSL outlets, pushed from a worker thread."""

    idle_seconds = 0.2

    def __init__(
        self, config: LSLOutletConfig, metainfo: MetaInfo, packet_rate: Fraction, reactor: Any, control: str,
    ) -> None:
        super().__init__("lsl", math.ceil(config.queue_seconds * float(packet_rate)), reactor)
        self.pylsl = import_pylsl()  # fails at start-up, not in the thread, when liblsl is missing
        self.config = config
        self.metainfo = metainfo
        self.source_id = config.source_id or default_source_id(control)
        self.anchor = ClockAnchor(packet_rate)
        self.publisher: LSLPublisher | None = None
        self.pushed = 0
        self.errors = 0
        self._first: tuple[int, float] | None = None
        self._error_logged_at = -math.inf

    def deliver(self, ticks: Sequence[Tick]) -> None:
        if self._first is None:
            self._first = (ticks[0].packet_id, time.monotonic())  # the grid's anchor, taken as the tick goes out
        super().deliver(ticks)

    def opened(self) -> None:
        self.publisher = LSLPublisher(self.pylsl, self.metainfo, self.config.name, self.source_id)
        self.say("info", "{sink}: publishing LSL outlets {outlets} (source_id {source_id}/...)",
                 outlets=", ".join(self.publisher.describe()), source_id=self.source_id)

    def handle(self, tick: Tick) -> None:
        if self.publisher is None:
            return
        if self.anchor.first_id is None:
            assert self._first is not None
            first_id, sent = self._first
            # Both clocks are monotonic; their offset is read once, here, off the reactor thread.
            self.anchor.set(first_id, sent + (self.pylsl.local_clock() - time.monotonic()))
        packet = DataPacket(tick.packet_id, tick.packet_id, tick.timestamp, tick.flags, dict(tick.blocks))
        try:
            self.publisher.push(packet, self.anchor(tick.packet_id))
            self.pushed += 1
        except Exception as error:  # liblsl refusing a push must not end the thread
            self.errors += 1
            now = time.monotonic()
            if now - self._error_logged_at >= ERROR_LOG_INTERVAL:
                self._error_logged_at = now
                self.say("error", "{sink}: LSL push failed ({count} so far): {error}", count=self.errors, error=error)

    def closing(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None
        self.say("info", "{sink}: LSL outlets closed after {packets} packets ({dropped} dropped)",
                 packets=self.pushed, dropped=self.dropped)


class LSLOutletService(Service):
    """[lsl] outlets = on: a child service of ``TiAService``, subscribed before the first tick."""

    name = "lsl"

    def __init__(self, config: LSLOutletConfig, hub: StreamHub, reactor: Any, control: str) -> None:
        self.config, self.hub, self.reactor, self.control = config, hub, reactor, control
        self.sink = self._sink()  # built now: a missing liblsl fails at start-up

    def _sink(self) -> LSLOutletSink:
        return LSLOutletSink(self.config, self.hub.metainfo, self.hub.packet_rate, self.reactor, self.control)

    def startService(self) -> None:
        super().startService()
        if self.sink.finished:  # started again
            self.sink = self._sink()
        self.sink.start()
        self.hub.subscribe(self.sink)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.hub.unsubscribe(self.sink)
        return self.sink.stop()


def attach_lsl(service: TiAService) -> LSLOutletService:
    """Give ``service`` its [lsl] outlets."""
    outlets = LSLOutletService(service.config.lsl, service.hub, service.reactor, service.config.control)
    outlets.setServiceParent(service)
    return outlets


# ------------------------------------------------------------------ tia lsl: a TiA client as LSL outlets


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
    last_number: int | None = None
    try:
        while time.monotonic() < deadline:
            batch = client.get_data(timeout=timeout)
            if not batch:
                raise TiAError("the server closed the data connection")
            for packet in batch:
                if anchor.first_id is None:
                    anchor.set(packet.packet_id, local_clock())
                if last_number is not None and packet.packet_number > last_number + 1:
                    err.write(f"tia lsl: {packet.packet_number - last_number - 1} packets lost before "
                              f"packet id {packet.packet_id}\n")
                last_number = packet.packet_number
                signals = dict(zip(flags_in(packet.flags), packet.arrays, strict=True))
                decoded = DataPacket(packet.packet_id, packet.packet_number, packet.timestamp, packet.flags, signals)
                publisher.push(decoded, anchor(packet.packet_id))
                pushed += 1
    except KeyboardInterrupt:
        pass
    return pushed


def run_client_bridge(
    host: str, port: int, timeout: float, seconds: float | None, name: str, source_id: str | None,
    out: TextIO | None = None, *, tls: TLSSettings | None = None, sample_order: str = "channel-major",
) -> int:
    """``tia lsl``: connect to a TiA server and republish its signals as LSL outlets (over TLS with ``tls``;
    ``sample_order`` as for ``TiAClient``)."""
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
