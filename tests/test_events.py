"""Injected events end to end: a TCP poster's codes arrive as event packets on a TCP data connection."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest
from support import SocketTestCase, config_from_text, ramp_config, until
from twisted.internet import threads
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.protocols.basic import LineReceiver

from tia.cli import event as event_command
from tia.cli import main
from tia.cli.common import Address
from tia.client.events import DEFAULT_EVENTS_PORT as CLIENT_EVENTS_PORT
from tia.client.events import post_event
from tia.config import ConfigError
from tia.daemon import build_service
from tia.protocol.packet import DataPacket
from tia.protocol.signals import by_name
from tia.server.listener import ListenError
from tia.sources.injected import DEFAULT_EVENTS_PORT, EventRejected, EventRouter, InjectedEventSource, parse_line

EVENTS = """
[events]
endpoint = {endpoint}

[source:trigger]
driver = injected
channels = trigger:event

[source:keys]
driver = injected
channels = key:keycode
max_pending = 3
"""
EVENT, KEYCODE = by_name("event").flag, by_name("keycode").flag


class Poster(LineReceiver):
    delimiter = b"\n"

    def __init__(self) -> None:
        self.replies: list[str] = []
        self.lost: Deferred[None] = Deferred()
        self._waiting: list[tuple[int, Deferred[list[str]]]] = []

    def lineReceived(self, line: bytes) -> None:
        self.replies.append(line.decode())
        for want, d in tuple(self._waiting):
            if len(self.replies) >= want:
                self._waiting.remove((want, d))
                d.callback(self.replies)

    def post(self, *lines: str) -> Deferred[list[str]]:
        assert self.transport is not None
        d: Deferred[list[str]] = Deferred()
        self._waiting.append((len(self.replies) + len(lines), d))
        self.transport.write("".join(f"{line}\n" for line in lines).encode())
        return d

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


def events_of(packets: list[DataPacket], flag: int) -> list[tuple[int, float]]:
    return [(p.packet_id, float(p.signals[flag][0, 0])) for p in packets if flag in p.signals]


class InjectedEventsTests(SocketTestCase):
    timeout = 30

    def setUp(self) -> None:
        config = ramp_config(rate=100, blocksize=1, channels=1,
                             extra=EVENTS.format(endpoint="tcp:0:interface=127.0.0.1"))
        self.serve(config)

    @inlineCallbacks
    def test_posted_codes_arrive_as_event_and_keycode_packets(self) -> Any:
        meta = self.service.hub.metainfo
        self.assertEqual([s.type.name for s in meta.signals], ["eeg", "keycode", "event"])
        _, collector = yield self.streaming(packets=3)
        poster = yield self.connect(self.service.events_port, Poster())
        posted_at = self.service.hub.ticks_sent
        replies = yield poster.post("7", "keycode 65", "event 1 2", "bogus 3", "event nan")
        self.assertEqual(replies[:2], ["OK", "OK"])
        self.assertTrue(replies[2].startswith("ERROR trigger has 1 channels"))
        self.assertTrue(replies[3].startswith("ERROR no injected source or signal type 'bogus'"))
        self.assertTrue(replies[4].startswith("ERROR"))
        while not (events_of(collector.packets, EVENT) and events_of(collector.packets, KEYCODE)):
            yield collector.wait_for(len(collector.packets) + 1)
        [(event_tick, code)] = events_of(collector.packets, EVENT)
        [(key_tick, key)] = events_of(collector.packets, KEYCODE)
        self.assertEqual((code, key), (7.0, 65.0))
        self.assertGreaterEqual(min(event_tick, key_tick), posted_at)  # stamped on arrival: a later packet

    @inlineCallbacks
    def test_a_burst_is_spread_over_consecutive_packets_never_dropped(self) -> Any:
        _, collector = yield self.streaming(packets=3)
        poster = yield self.connect(self.service.events_port, Poster())
        replies = yield poster.post(*[f"event {n}" for n in range(1, 9)], "trigger 9")
        self.assertEqual(replies, ["OK"] * 9)
        while len(events_of(collector.packets, EVENT)) < 9:
            yield collector.wait_for(len(collector.packets) + 1)
        events = events_of(collector.packets, EVENT)
        self.assertEqual([code for _, code in events], [float(n) for n in range(1, 10)])
        first = events[0][0]
        self.assertEqual([tick for tick, _ in events], list(range(first, first + 9)))

    @inlineCallbacks
    def test_a_full_queue_is_refused_not_dropped(self) -> Any:
        poster = yield self.connect(self.service.events_port, Poster())
        self.service.clock.stop()  # nothing is sent: the keycode queue (max_pending = 3) fills
        replies = yield poster.post(*["keycode 1"] * 4)
        self.assertEqual(replies[:3], ["OK"] * 3)
        self.assertIn("max_pending", replies[3])

    @inlineCallbacks
    def test_an_endless_line_is_refused_and_the_connection_closed(self) -> Any:
        poster = yield self.connect(self.service.events_port, Poster())
        assert poster.transport is not None
        poster.transport.write(b"7" * 1000)
        yield poster.lost
        self.assertEqual(len(poster.replies), 1)
        self.assertTrue(poster.replies[0].startswith("ERROR line longer than"))

    @inlineCallbacks
    def test_post_event_the_blocking_client_behind_tia_event(self) -> Any:
        _, collector = yield self.streaming(packets=3)
        reply = yield threads.deferToThread(post_event, "127.0.0.1", self.service.events_port, "event 42")
        self.assertEqual(reply, "OK")
        while not events_of(collector.packets, EVENT):
            yield collector.wait_for(len(collector.packets) + 1)
        self.assertEqual(events_of(collector.packets, EVENT)[0][1], 42.0)

    @inlineCallbacks
    def test_tia_event_command(self) -> Any:
        _, collector = yield self.streaming(packets=3)
        host = f"127.0.0.1:{self.service.events_port}"
        output = io.StringIO()
        self.patch(sys, "stdout", output)
        code = yield threads.deferToThread(main, ["event", "--host", host, "--signal", "keycode", "65"])
        self.assertEqual(code, 0)
        self.assertEqual(output.getvalue(), f"posted 'keycode 65' to {host}\n")
        while not events_of(collector.packets, KEYCODE):
            yield collector.wait_for(len(collector.packets) + 1)
        self.assertEqual(events_of(collector.packets, KEYCODE)[0][1], 65.0)
        refused = yield threads.deferToThread(main, ["event", "--host", host, "--signal", "bogus", "1"])
        self.assertEqual(refused, 1)
        self.assertEqual(output.getvalue().count("\n"), 1)  # nothing more printed for the refusal

    def test_a_taken_events_port_fails_start_up_cleanly(self) -> Deferred[None]:
        endpoint = f"tcp:{self.service.events_port}:interface=127.0.0.1"
        other = build_service(ramp_config(rate=100, blocksize=1, channels=1, extra=EVENTS.format(endpoint=endpoint)))
        with self.assertRaisesRegex(ListenError, "cannot listen on .*Address already in use"):
            other.startService()
        self.assertFalse(other.running)
        return until(lambda: other.factory.numPorts == 0)  # its control port, bound first, closes


def test_line_grammar() -> None:
    assert parse_line("7") == (None, [7.0])
    assert parse_line("  button 1 0 1 ") == ("button", [1.0, 0.0, 1.0])
    for bad in ("", "event", "event x", "1 inf"):
        with pytest.raises(EventRejected):
            parse_line(bad)


def test_router_by_source_name_type_and_alias() -> None:
    config = ramp_config(extra=EVENTS.format(endpoint="tcp:0") + "[source:pad]\ndriver = injected\n"
                         "channels = a:button, b:button\n")
    sources = [InjectedEventSource(s) for s in config.sources if s.driver == "injected"]
    router = EventRouter(sources)
    assert router.post("3").spec.name == "trigger"
    assert router.post("keys 3").spec.name == "keys"
    assert router.post("mouse 3").spec.name == "keys"  # keycode's alias
    assert router.post("buttons 1 0").spec.name == "pad"
    posted = sources[2].read(0)
    assert posted is not None and [float(v) for v in posted[:, 0]] == [1.0, 0.0]
    assert sources[2].read(1) is None


@pytest.mark.parametrize(
    ("text", "section", "key", "words"),
    [
        ("[events]\nendpoint = tcp:9100\n", "events", "endpoint", "no [source:NAME] with driver = injected"),
        ("[source:t]\ndriver = injected\nchannels = t:event\n", "source:t", "driver", "[events] endpoint"),
        ("[events]\nendpoint = udp:9100\n[source:t]\ndriver = injected\nchannels = t:event\n", "events",
         "endpoint", "not a server endpoint"),
        ("[events]\nendpoint = tcp:1\n[source:t]\ndriver = injected\nchannels = t:eeg\n", "source:t", "driver",
         "aperiodic"),
        ("[events]\nendpoint = tcp:1\nport = 3\n[source:t]\ndriver = injected\nchannels = t:event\n", "events",
         "port", "unknown key"),
    ],
)
def test_events_config_errors(text: str, section: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_text("[source:eeg]\ndriver = ramp\nrate = 10\nchannels = 1\ntype = eeg\n" + text)
    assert (info.value.section, info.value.key) == (section, key)
    assert words in info.value.message


def test_tia_event_usage_and_unreachable_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    assert CLIENT_EVENTS_PORT == DEFAULT_EVENTS_PORT
    assert event_command.events_address("example.org") == Address("example.org", 9100)
    assert event_command.events_address("[::1]:7") == Address("::1", 7)
    assert event_command.events_address("host:9200") == Address("host", 9200)
    assert main(["event", "x"]) == 2
    assert main(["event", "--host", "127.0.0.1:1", "--timeout", "2", "7"]) == 1
    assert "tia event: error: cannot connect to 127.0.0.1:1: " in capsys.readouterr().err
