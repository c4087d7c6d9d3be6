"""``[server] peer_timeout``: the kernel timers that close a vanished peer's connections.

The real thing (a pulled cable between network namespaces) is in
tests/test_netns_vanish.py; here the key, the timers derived from it and
that every client-facing connection gets them.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from support import LogCapture, SocketTestCase, port_of, ramp_config, socket_of, until
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Protocol

from tia.config import ConfigError
from tia.server.guard import keepalive_timers


def test_timers_end_a_tenth_before_the_peer_timeout() -> None:
    assert keepalive_timers(20) == (10, 2, 4, 18_000)  # the default: probes at 10, 12, ..., 18 s
    assert keepalive_timers(3) == (1, 1, 1, 2_000)
    for peer_timeout in range(3, 400):
        idle, interval, probes, user_timeout_ms = keepalive_timers(peer_timeout)
        assert min(idle, interval, probes) >= 1
        end = peer_timeout - max(1, peer_timeout // 10)
        assert idle + interval * probes == user_timeout_ms // 1000 == end
        assert probes <= 7 and idle >= end // 2  # a few probes, after a quiet while


def test_the_key_default_and_bounds() -> None:
    assert ramp_config().peer_timeout == 20
    assert ramp_config(server_extra="peer_timeout = 5").peer_timeout == 5
    for value, words in (("2", "out of range 3..86400"), ("1.5", "not an integer"), ("soon", "not an integer")):
        with pytest.raises(ConfigError) as info:
            ramp_config(server_extra=f"peer_timeout = {value}")
        assert str(info.value).startswith("test.ini [server] peer_timeout: "), info.value
        assert words in str(info.value)
        assert "\n" not in str(info.value)


class PeerTimeoutSocketTests(SocketTestCase):
    timeout = 20

    def setUp(self) -> None:
        self.log = LogCapture(self)
        self.serve(ramp_config(rate=1000, blocksize=10, server_extra="peer_timeout = 7"))

    @inlineCallbacks
    def test_control_data_and_state_connections_get_the_timers(self) -> Any:
        control, _ = yield self.streaming()
        yield self.connect(port_of((yield control.request("GetServerStateConnection"))), Protocol())
        yield until(lambda: len(self.service.state.clients) == 1)
        (server_control,) = self.service.factory.sessions
        (state,) = self.service.state.clients
        assert server_control.tcp_data is not None
        sockets = {
            "control": socket_of(server_control),
            "data": socket_of(server_control.tcp_data),
            "state": socket_of(state),
        }
        idle, interval, probes, user_timeout_ms = keepalive_timers(7)
        for name, sock in sockets.items():
            self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1, name)
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), idle, name)
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL), interval, name)
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT), probes, name)
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT), user_timeout_ms, name)

    @inlineCallbacks
    def test_a_data_connection_lost_uncleanly_is_logged_once(self) -> Any:
        _, collector = yield self.streaming()
        collector.transport.abortConnection()  # a reset: what the server sees when its timers give up, too
        yield collector.lost
        yield self.log.wait_for("warn", "is gone")
        yield until(lambda: all(session.tcp_data is None for session in self.service.factory.sessions))
        gone = [line for _, line in self.log.lines if "is gone" in line]
        self.assertEqual(len(gone), 1, self.log.lines)
        self.assertIn("no answer for 7 s, or a reset", gone[0])
