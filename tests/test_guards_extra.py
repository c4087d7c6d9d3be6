"""The connection guards beyond the control port's: per-host limits, the allow-list on [events] and the
web monitor, and the seed API's exposure warning said once. Real sockets on 127.0.0.1 (port 0)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from support import LogCapture, RawClient, SocketTestCase, config_from_text, port_of, ramp_config, tcp_connect
from test_events import EVENTS
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, connectProtocol

from tia.config import ConfigError


class LoggingCase(SocketTestCase):
    timeout = 30

    def setUp(self) -> None:
        self.log = LogCapture(self)

    def logged(self, text: str) -> int:
        return self.log.count(text)

    def raw_from(self, port: int, source: str = "127.0.0.1") -> Deferred[RawClient]:
        """A RawClient connected to 127.0.0.1:``port`` from the local address ``source``."""
        client = RawClient()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
        self.close_at_end(client, abort=True)
        connected: Deferred[RawClient] = connectProtocol(endpoint, client).addCallback(lambda _: client)
        return connected


class PerHostLimitTests(LoggingCase):
    def setUp(self) -> None:
        super().setUp()
        self.serve(ramp_config(server_extra="max_connections_per_host = 2\nmax_connections = 10"))

    @inlineCallbacks
    def test_beyond_the_per_host_limit_refused_politely_other_hosts_served(self) -> Any:
        control, healthy = yield self.streaming()
        second = yield self.raw_from(self.port)
        refused = []
        for _ in range(5):
            refused.append((yield self.raw_from(self.port)))
        for client in refused:
            yield client.lost
            self.assertEqual(bytes(client.received), b"TiA 1.0\nError -- too many connections from 127.0.0.1 "
                                                     b"(limit 2 per host)\n\n")
        self.assertFalse(second.lost.called)
        self.assertEqual(self.logged("refused a control connection from 127.0.0.1: 2 connections from one host"), 1)
        other = yield self.raw_from(self.port, source="127.0.0.2")  # another peer address: its own budget
        other.send(b"TiA 1.0\nCheckProtocolVersion\n\n")
        yield other.wait_for_replies(1)
        self.assertEqual(bytes(other.received), b"TiA 1.0\nOK\n\n")
        self.assertFalse(other.lost.called)

        # server-state connections count per host as well: beyond, closed without a word
        state_port = port_of((yield control.request("GetServerStateConnection")))
        listeners = []
        for _ in range(3):
            listeners.append((yield self.raw_from(state_port)))
        yield listeners[2].lost
        self.assertEqual(bytes(listeners[2].received), b"")
        self.assertEqual([c.lost.called for c in listeners[:2]], [False, False])
        self.assertEqual(self.logged("refused a server-state connection from 127.0.0.1: 2 connections"), 1)

        leaving = yield self.session(second)
        second.transport.loseConnection()  # a slot is free again
        yield leaving.closed
        newcomer = yield self.raw_from(self.port)
        newcomer.send(b"TiA 1.0\nCheckProtocolVersion\n\n")
        yield newcomer.wait_for_replies(1)
        self.assertEqual(bytes(newcomer.received), b"TiA 1.0\nOK\n\n")
        count = len(healthy.packets)
        yield healthy.wait_for(count + 10)


class AllowListCase(LoggingCase):
    """A server with ``[server] allow = {allow}``, an ``[events]`` endpoint and the web monitor on loopback."""

    allow = "10.0.0.0/8"

    def setUp(self) -> None:
        super().setUp()
        events = EVENTS.format(endpoint="tcp:0:interface=127.0.0.1")
        self.serve(ramp_config(server_extra=f"allow = {self.allow}", extra=events + "[web]\nendpoint = tcp:0\n"))

    @inlineCallbacks
    def post(self) -> Any:
        """What the [events] endpoint answers to ``7``; b"" when it closes without a word."""
        poster = yield tcp_connect(self.service.events_port, RawClient())
        self.close_at_end(poster, abort=True)
        poster.send(b"7\n")
        yield poster.wait_until(lambda: poster.received.endswith(b"\n") or poster.lost.called)
        return bytes(poster.received)

    @inlineCallbacks
    def get_status(self) -> Any:
        """What the web monitor answers to GET /status; b"" when it closes without a word."""
        client = yield tcp_connect(self.service.getServiceNamed("web").port, RawClient())
        self.close_at_end(client, abort=True)
        client.send(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        yield client.lost
        return bytes(client.received)


class AllowListRefusalTests(AllowListCase):
    @inlineCallbacks
    def test_posters_and_browsers_outside_the_allowed_networks_are_closed(self) -> Any:
        for _ in range(3):
            self.assertEqual((yield self.post()), b"")
            self.assertEqual((yield self.get_status()), b"")
        self.assertEqual(self.logged("refused a posted-events connection from 127.0.0.1: not in the allowed"), 1)
        self.assertEqual(self.logged("refused a web monitor connection from 127.0.0.1: not in the allowed"), 1)


class AllowListAcceptTests(AllowListCase):
    allow = "127.0.0.0/8"

    @inlineCallbacks
    def test_posters_and_browsers_inside_the_allowed_networks_are_served(self) -> Any:
        self.assertEqual((yield self.post()), b"OK\n")
        reply = yield self.get_status()
        self.assertTrue(reply.startswith(b"HTTP/1.1 200"), reply[:80])
        self.assertEqual(self.logged("refused a"), 0)


class EventsUnixSocketTests(LoggingCase):
    """A UNIX socket peer is on this machine: no network of the allow-list applies to it."""

    def setUp(self) -> None:
        super().setUp()
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        self.path = Path(folder) / "events.sock"
        self.serve(ramp_config(server_extra="allow = 10.0.0.0/8", extra=EVENTS.format(endpoint=f"unix:{self.path}")))

    @inlineCallbacks
    def test_a_unix_socket_poster_is_served(self) -> Any:
        poster = RawClient()
        yield connectProtocol(UNIXClientEndpoint(reactor, str(self.path)), poster)
        self.close_at_end(poster)
        poster.send(b"7\n")
        yield poster.wait_until(lambda: poster.received.endswith(b"\n") or poster.lost.called)
        self.assertEqual(bytes(poster.received), b"OK\n")


def test_per_host_limit_config_key() -> None:
    assert ramp_config().max_connections_per_host == 0  # off by default
    assert ramp_config(server_extra="max_connections_per_host = 3").max_connections_per_host == 3
    for value in ("-1", "some"):
        with pytest.raises(ConfigError) as info:
            config_from_text(
                f"[server]\nmax_connections_per_host = {value}\n"
                "[source:eeg]\ndriver = ramp\nrate = 10\nchannels = 1\ntype = eeg\n"
            )
        assert "test.ini [server] max_connections_per_host:" in str(info.value)


SEED_EXPOSURE = """
from twisted.logger import formatEvent, globalLogPublisher
from tia import TIA_SIG_EEG, TiAConnectionHandler, TiAServer, TiASignalConfig

events = []
globalLogPublisher.addObserver(events.append)
server = TiAServer(("0.0.0.0", 0), TiAConnectionHandler)
server.start([TiASignalConfig(1, 100, 10, lambda id: [0.0] * 10, id=0, sigtype=TIA_SIG_EEG)])
server.stop()
texts = [formatEvent(e) or "" for e in events]
print(sum("beyond loopback" in t or "the control port listens" in t for t in texts))
"""


def test_the_seed_server_warns_about_exposure_exactly_once() -> None:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SEED_EXPOSURE)], capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1"], result.stdout + result.stderr


def test_a_unix_socket_peer_is_never_refused_by_the_allow_list() -> None:
    from twisted.internet.address import IPv4Address, UNIXAddress

    from tia.server.guard import ConnectionGuard

    guard = ConnectionGuard(ramp_config(server_extra="allow = 10.0.0.0/8").allow)
    assert guard.admits(UNIXAddress(b"/run/tia.sock"), "control")
    assert not guard.admits(IPv4Address("TCP", "127.0.0.1", 4000), "control")
    assert guard.admits(IPv4Address("TCP", "10.1.2.3", 4000), "control")

