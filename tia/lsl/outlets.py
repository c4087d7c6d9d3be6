"""``[lsl] outlets = on``: the server's own signals as LSL outlets, pushed from a worker thread.

:class:`LSLOutletSink` is a :class:`~tia.server.sink.QueueSink` (bounded,
never delaying the clock or the network clients); its worker wakes every
``wake_seconds`` (20 ms) and pushes the ticks that came meanwhile, so
outlets see samples at most that late while their time stamps stay on the
tick grid: the anchor is the monotonic time at which the hub sent the first
tick, moved onto LSL's clock once; the grid runs on the same monotonic
clock, so the two never drift apart. :class:`LSLOutletService` is the child
service of ``TiAService`` that ``tia.daemon.build_service`` attaches
(:func:`attach_lsl`).
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed

from tia.config import LSLOutletConfig
from tia.lsl.publisher import ClockAnchor, LSLPublisher
from tia.protocol.metainfo import MetaInfo
from tia.server.sink import QueueSink
from tia.server.tick import Tick
from tia.sources.lsl import import_pylsl

if TYPE_CHECKING:
    from tia.server.hub import StreamHub
    from tia.server.service import TiAService

__all__ = ["LSLOutletService", "LSLOutletSink", "attach_lsl", "default_source_id"]

ERROR_LOG_INTERVAL = 10.0  # seconds between two "push failed" errors


def default_source_id(control: str) -> str:
    """Stable across restarts (so LSL inlets reconnect): this host and the control endpoint."""
    return f"txtia@{socket.gethostname()}:{control}"


class LSLOutletSink(QueueSink):
    """The server's signals as LSL outlets, pushed from a worker thread."""

    wake_seconds = 0.02  # how late outlets may see a sample; its time stamp does not depend on it

    def __init__(
        self, pylsl: Any, config: LSLOutletConfig, metainfo: MetaInfo, packet_rate: Fraction, reactor: Any,
        control: str,
    ) -> None:
        super().__init__("lsl", math.ceil(config.queue_seconds * float(packet_rate)), reactor)
        self.pylsl = pylsl
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
        try:
            self.publisher.push(tick.blocks, self.anchor(tick.packet_id))
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
    """[lsl] outlets = on: a child service of ``TiAService``; each start subscribes a new sink before the
    first tick, each stop unsubscribes it and closes its outlets. ``sink`` is the current or last one."""

    name = "lsl"

    def __init__(self, config: LSLOutletConfig, hub: StreamHub, reactor: Any, control: str) -> None:
        self.pylsl = import_pylsl()  # now: a missing liblsl fails at start-up, not in the thread
        self.config, self.hub, self.reactor, self.control = config, hub, reactor, control
        self.sink: LSLOutletSink | None = None

    def startService(self) -> None:
        super().startService()
        self.sink = LSLOutletSink(
            self.pylsl, self.config, self.hub.metainfo, self.hub.packet_rate, self.reactor, self.control
        )
        self.sink.start()
        self.hub.subscribe(self.sink)

    def stopService(self) -> Deferred[None]:
        """After the clock stopped: the buffered ticks are pushed, then the outlets closed."""
        super().stopService()
        if self.sink is None:
            return succeed(None)
        self.hub.unsubscribe(self.sink)
        return self.sink.stop()


def attach_lsl(service: TiAService) -> LSLOutletService:
    """Give ``service`` its [lsl] outlets."""
    outlets = LSLOutletService(service.config.lsl, service.hub, service.reactor, service.config.control)
    outlets.setServiceParent(service)
    return outlets
