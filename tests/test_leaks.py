"""200 clients joining and leaving during streaming: nothing is left behind.

File descriptors must come back to the baseline exactly, memory within a few
MB, no session object may survive its connection, and the client that stays
keeps an exact, gap-free stream. Trial fails the test on any error logged
with a traceback meanwhile.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

from support import (
    BLOCK,
    CHANNELS,
    ControlClient,
    PacketCollector,
    SocketTestCase,
    check_stream,
    port_of,
    ramp_config,
    tcp_connect,
    until,
)
from twisted.internet import defer
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial import unittest

from tia.server.control import ControlFactory, ServerControlProtocol
from tia.server.data import TCPDataListener, TCPDataProtocol


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def live(kind: type, factory: ControlFactory) -> int:
    """Instances of ``kind`` still alive that belong to the server of ``factory`` (other tests' aside)."""

    sessions = factory.sessions

    def owner(obj: object) -> object:
        if isinstance(obj, ServerControlProtocol):
            return obj.sessions
        callback = getattr(obj, "_on_lost", None)  # data protocols and listeners: their control's sessions
        return getattr(getattr(callback, "__self__", None), "sessions", None)

    return sum(isinstance(o, kind) and owner(o) is sessions for o in gc.get_objects())


class ChurnTests(SocketTestCase):
    timeout = 60

    def setUp(self) -> None:
        if not Path("/proc/self/fd").is_dir():
            raise unittest.SkipTest("needs /proc to count file descriptors")
        self.serve(ramp_config(rate=1000, blocksize=BLOCK, channels=CHANNELS))

    @inlineCallbacks
    def client(self, how: int) -> Any:
        """Join, stream a few packets, leave in one of four ways."""
        # no cleanups: they would keep these peers alive, and the test counts what survives
        control = yield tcp_connect(self.port, ControlClient())
        data_port = port_of((yield control.request("GetDataConnection:TCP")))
        if how == 3:  # asks for a data port and leaves without ever connecting to it
            control.transport.loseConnection()
            yield control.lost
            return
        collector = yield tcp_connect(data_port, PacketCollector())
        yield control.request("StartDataTransmission")
        yield collector.wait_for(3)
        if how == 0:  # the polite way
            yield control.request("StopDataTransmission")
            control.transport.loseConnection()
        elif how == 1:  # data first, then control
            collector.transport.loseConnection()
            yield collector.lost
            control.transport.loseConnection()
        else:  # vanishes: resets both
            collector.transport.abortConnection()
            control.transport.abortConnection()
        yield defer.gatherResults([control.lost, collector.lost])
        numbers = [p.connection_number for p in collector.packets]
        assert numbers == list(range(len(numbers))), numbers

    @inlineCallbacks
    def churn(self, count: int, batch: int = 20) -> Any:
        for start in range(0, count, batch):
            yield defer.gatherResults([self.client(n % 4) for n in range(start, start + batch)])

    @inlineCallbacks
    def settle(self, fds: int) -> Generator[Deferred[Any], Any, None]:
        """Until the server has seen every close and every descriptor is back to ``fds``."""
        yield until(lambda: len(self.service.factory.sessions) == 1 and len(self.service.hub.subscribers) == 1
                    and open_fds() == fds)
        gc.collect()

    @inlineCallbacks
    def test_200_clients_join_and_leave_while_one_streams(self) -> Any:
        _, collector = yield self.streaming(packets=0)  # the stayer, streaming throughout
        fds = open_fds()

        yield self.churn(40)  # warm-up: caches, allocator arenas, lazily built objects
        yield self.settle(fds)
        rss = rss_bytes()

        yield self.churn(200)
        yield self.settle(fds)
        self.assertEqual(open_fds(), fds)
        self.assertLess(rss_bytes() - rss, 4 << 20)
        factory = self.service.factory
        self.assertEqual(live(ServerControlProtocol, factory), 1)  # the stayer's session only
        self.assertEqual(live(TCPDataProtocol, factory), 1)
        self.assertEqual(live(TCPDataListener, factory), 1)  # the stayer's, held by its data protocol
        self.assertEqual(len(self.service.factory.sessions), 1)
        self.assertEqual(len(self.service.hub.subscribers), 1)
        yield collector.wait_for(len(collector.packets) + 10)
        check_stream(self, collector.packets)
