"""The live web monitor: endpoint options, the display tap, and the HTTP endpoints on real sockets."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import LogCapture, SocketTestCase, ramp_config, unsent_bytes, until
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from tia.config import ConfigError, parse_web_endpoint
from tia.daemon import build_service
from tia.server.guard import endpoint_interface
from tia.server.hub import StreamHub
from tia.server.listener import ListenError
from tia.sources import build_source
from tia.tap import Options
from tia.web.display import BrowserStream, DisplayTap, _Trace, decimation_factor

RATE, BLOCK, CHANNELS = 1000, 10, 4
MARKERS = """
[web]
endpoint = tcp:0

[source:markers]
driver = events
channels = trigger:event
interval = 0.1
codes = 1, 2, 3
"""


# ---------------------------------------------------------------- endpoint option and config


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("off", None),
        ("", None),
        ("8080", "tcp:8080:interface=127.0.0.1"),
        ("tcp:8080", "tcp:8080:interface=127.0.0.1"),
        ("tcp:port=8080", "tcp:port=8080:interface=127.0.0.1"),
        ("tcp:8080:interface=0.0.0.0", "tcp:8080:interface=0.0.0.0"),
        ("tcp6:8080", "tcp6:8080:interface=\\:\\:1"),
        ("unix:/run/tia-web.sock", "unix:/run/tia-web.sock"),
    ],
)
def test_web_endpoint_binds_loopback_unless_told(text: str, expected: str | None) -> None:
    assert parse_web_endpoint(text) == expected


@pytest.mark.parametrize("text", ["udp:8080", "tcp:", "tcp:http", "tcp:70000", "http://localhost:8080"])
def test_bad_web_endpoints_are_refused_naming_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match="--web"):
        parse_web_endpoint(text)


def test_endpoint_interface_unescapes_ipv6() -> None:
    assert endpoint_interface("tcp6:8080:interface=\\:\\:1") == "::1"
    assert endpoint_interface("tcp:8080") is None


def test_web_section_and_option(tmp_path: Path) -> None:
    config = ramp_config(extra="[web]\nendpoint = tcp:8123\n")
    assert config.web_endpoint == "tcp:8123:interface=127.0.0.1"
    assert ramp_config().web_endpoint is None
    with pytest.raises(ConfigError, match=r"\[web\] port: unknown key"):
        ramp_config(extra="[web]\nport = 8080\n")
    with pytest.raises(ConfigError, match=r"\[web\] endpoint"):
        ramp_config(extra="[web]\nendpoint = udp:8080\n")

    path = tmp_path / "server.ini"
    path.write_text("[source:eeg]\ndriver = ramp\nrate = 100\nblocksize = 1\nchannels = 1\ntype = eeg\n[web]\n"
                    "endpoint = tcp:8124\n")
    options = Options()
    options.parseOptions(["--config", str(path), "--web", "tcp:9090:interface=0.0.0.0"])
    assert options.config is not None and options.config.web_endpoint == "tcp:9090:interface=0.0.0.0"
    options = Options()
    options.parseOptions(["--config", str(path), "--web", "off"])
    assert options.config is not None and options.config.web_endpoint is None
    options = Options()
    options.parseOptions(["--config", str(path)])
    assert options.config is not None and options.config.web_endpoint == "tcp:8124:interface=127.0.0.1"
    assert "--web" in str(Options())


# ---------------------------------------------------------------- the display tap (no sockets)


def ramp_hub(interval: str = "0.05") -> StreamHub:
    config = ramp_config(rate=RATE, blocksize=BLOCK, channels=CHANNELS, extra=MARKERS.replace("0.1", interval))
    return StreamHub([build_source(spec) for spec in config.sources], config.subject)


def run_ticks(hub: StreamHub, first: int, count: int) -> None:
    for tick in range(first, first + count):
        hub.run(tick)


def expected_buckets(segment: dict[str, Any], factor: int, channel: int) -> list[float]:
    """The ramp's (channel c, sample k -> c * 1000 + k % 1000) min/max pair per bucket, in time order."""
    start = round(segment["t0"] * RATE - factor / 4)
    pairs = len(segment["y"][0]) // 2
    values: list[float] = []
    for bucket in range(pairs):
        samples = [channel * 1000 + k % 1000 for k in range(start + bucket * factor, start + (bucket + 1) * factor)]
        low, high = min(samples), max(samples)
        values += [low, high] if samples.index(low) <= samples.index(high) else [high, low]
    return values


def test_tap_decimates_to_min_max_pairs_that_join_across_frames() -> None:
    hub = ramp_hub()
    tap = DisplayTap(hub)
    factor = decimation_factor(RATE)
    assert factor == 8
    hub.subscribe(tap)
    segments = []
    first = 0
    for count in (3, 5, 1, 7):  # ticks per frame: the buckets do not align with blocks or frames
        run_ticks(hub, first, count)
        first += count
        frame = tap.frame()
        assert frame is not None
        assert frame["now"] == pytest.approx(first * BLOCK / RATE)
        segments += frame["s"]
    assert tap.frame() is None  # no tick, no frame
    assert all(s["dt"] == pytest.approx(factor / (2 * RATE)) for s in segments)
    points = 0
    for segment in segments:
        assert segment["t0"] == pytest.approx((points // 2 * factor + factor / 4) / RATE)  # contiguous
        points += len(segment["y"][0])
        for channel in range(CHANNELS):
            shown = (np.asarray(segment["y"][channel]) * segment["q"][channel]).tolist()
            assert shown == pytest.approx(expected_buckets(segment, factor, channel + 1))
    assert points == 2 * (first * BLOCK // factor)  # every complete bucket shown once


def test_each_min_max_pair_is_in_time_order() -> None:
    trace = _Trace(index=0, rate=100.0, block_size=4, factor=2)
    trace.add(0, np.array([[0, 5, 3, 1]], dtype=np.float32))
    (segment,) = trace.drain()
    assert (np.asarray(segment["y"][0]) * segment["q"][0]).tolist() == [0, 5, 3, 1]  # rising, then falling


def test_tap_turns_events_into_markers_and_breaks_the_trace_at_gaps() -> None:
    hub = ramp_hub(interval="0.05")  # an event every 5 ticks
    tap = DisplayTap(hub)
    hub.subscribe(tap)
    run_ticks(hub, 0, 12)
    frame = tap.frame()
    assert frame is not None
    assert [(m["t"], m["type"], m["text"]) for m in frame["m"]] == [(0.05, "event", "1"), (0.1, "event", "2")]
    run_ticks(hub, 12, 3)  # samples 120..149: 120..143 fill three buckets, 144..149 wait
    run_ticks(hub, 20, 4)  # ticks 15..19 never came (a stopped source): a new segment at sample 200
    frame = tap.frame()
    assert frame is not None
    starts = [round(s["t0"] * RATE) for s in frame["s"]]  # bucket start + factor / 4
    assert starts == [120 + 2, 200 + 2]
    assert [len(s["y"][0]) // 2 for s in frame["s"]] == [3, 5]  # the incomplete bucket before the gap is dropped


def test_tap_keeps_the_newest_seconds_only_when_no_frame_is_taken() -> None:
    hub = ramp_hub()
    tap = DisplayTap(hub)
    hub.subscribe(tap)
    run_ticks(hub, 0, 1000)  # 10 s of data, no frame in between
    frame = tap.frame()
    assert frame is not None
    shown = sum(len(s["y"][0]) for s in frame["s"]) // 2 * decimation_factor(RATE)
    assert shown <= 2.0 * RATE  # MAX_PENDING_SECONDS
    assert frame["s"][0]["t0"] >= 8.0  # the newest two seconds


def test_a_paused_browser_keeps_only_the_newest_frame() -> None:
    written: list[bytes] = []
    browser = BrowserStream(written.append, lambda: None, "peer")
    browser.offer(b"1")
    browser.pauseProducing()
    for data in (b"2", b"3", b"4"):
        browser.offer(data)
    assert written == [b"1"] and browser.pending == b"4" and browser.dropped == 2
    browser.resumeProducing()
    assert written == [b"1", b"4"] and browser.pending is None and browser.sent == 2


# ---------------------------------------------------------------- HTTP on real sockets


class BodyReader(Protocol):
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        if reason is None or reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(reason)


def read_body(response: Any) -> Deferred[bytes]:
    reader = BodyReader()
    response.deliverBody(reader)
    return reader.done


class EventReader(Protocol):
    """Reads a Server-Sent Events body: (event name, decoded JSON) per message."""

    def __init__(self) -> None:
        self.buffer = b""
        self.events: list[tuple[str, Any]] = []
        self.done: Deferred[None] = Deferred()
        self._want: tuple[int, Deferred[None]] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n\n" in self.buffer:
            raw, self.buffer = self.buffer.split(b"\n\n", 1)
            name, payload = "message", None
            for line in raw.decode().split("\n"):
                field, _, value = line.partition(": ")
                if field == "event":
                    name = value
                elif field == "data":
                    payload = json.loads(value)
            if payload is not None:
                self.events.append((name, payload))
        if self._want is not None and len(self.events) >= self._want[0]:
            want, self._want = self._want, None
            want[1].callback(None)

    def wait_for(self, count: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if len(self.events) >= count:
            d.callback(None)
        else:
            self._want = (count, d)
        return d

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(None)

    def frames(self) -> list[dict[str, Any]]:
        return [payload for name, payload in self.events if name == "message"]


class WebTestCase(SocketTestCase):
    timeout = 30
    channels = CHANNELS
    frame_rate = 25.0

    def setUp(self) -> None:
        config = ramp_config(rate=RATE, blocksize=BLOCK, channels=self.channels, extra=MARKERS)
        self.service = build_service(config)
        self.service.getServiceNamed("web").display.frame_rate = self.frame_rate
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.port = self.service.control_port
        self.web = self.service.getServiceNamed("web")
        self.base = f"http://127.0.0.1:{self.web.port}"
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=self.pool)
        self.addCleanup(self.pool.closeCachedConnections)

    @inlineCallbacks
    def get(self, path: str, host: str | None = None) -> Any:
        headers = Headers({b"host": [host.encode()]}) if host else None
        response = yield self.agent.request(b"GET", (self.base + path).encode(), headers)
        body = yield read_body(response)
        return response, body

    @inlineCallbacks
    def stream(self) -> Any:
        response = yield self.agent.request(b"GET", (self.base + "/stream").encode())
        self.assertEqual(response.code, 200)
        reader = EventReader()
        response.deliverBody(reader)
        transport: Any = reader.transport
        self.addCleanup(lambda: transport.stopProducing() if not reader.done.called else None)
        return reader

    @inlineCallbacks
    def streaming_client(self) -> Any:
        """A TiA client streaming over TCP; returns (control, its host:port)."""
        control, _ = yield self.streaming()
        local: Any = control.transport.getHost()
        return control, f"{local.host}:{local.port}"


class EndpointTests(WebTestCase):
    @inlineCallbacks
    def test_page_and_static_files(self) -> Any:
        response, body = yield self.get("/")
        self.assertEqual(response.code, 200)
        self.assertIn(b"<canvas", body)
        self.assertIn(b"static/app.js", body)
        self.assertIn(b"default-src 'none'", response.headers.getRawHeaders(b"content-security-policy")[0])
        for name, kind in (("app.js", b"text/javascript"), ("style.css", b"text/css")):
            response, body = yield self.get(f"/static/{name}")
            self.assertEqual(response.code, 200)
            self.assertTrue(response.headers.getRawHeaders(b"content-type")[0].startswith(kind))
            self.assertGreater(len(body), 500)
        for missing in ("/static", "/static/", "/static/../config.py", "/static/app.js/x", "/nothing"):
            response, _ = yield self.get(missing)
            self.assertEqual(response.code, 404, missing)

    @inlineCallbacks
    def test_status_lists_signals_and_the_streaming_client(self) -> Any:
        _, peer = yield self.streaming_client()
        response, body = yield self.get("/status")
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        status = json.loads(body)
        self.assertEqual(status["packet_rate"], 100.0)
        self.assertGreater(status["ticks_sent"], 0)
        self.assertGreaterEqual(status["uptime_seconds"], 0)
        self.assertIn("late_ticks", status)
        self.assertEqual(
            [(s["type"], s["sampling_rate"], s["channels"], s["aperiodic"]) for s in status["signals"]],
            [("eeg", 1000.0, CHANNELS, False), ("event", 100.0, 1, True)],
        )
        self.assertEqual(status["signals"][0]["labels"], [f"eeg{n}" for n in range(1, CHANNELS + 1)])
        (client,) = status["clients"]
        self.assertEqual((client["peer"], client["transport"], client["streaming"]), (peer, "TCP", True))
        self.assertGreater(client["packets"], 0)
        self.assertEqual(client["dropped"], 0)
        self.assertEqual(status["web"]["browsers"], 0)

    @inlineCallbacks
    def test_metrics_are_prometheus_text(self) -> Any:
        _, peer = yield self.streaming_client()
        response, body = yield self.get("/metrics")
        self.assertTrue(response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain; version=0.0.4"))
        samples: dict[str, float] = {}
        families: dict[str, str] = {}
        sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_]\w*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')
        for line in body.decode().splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ")
                families[name] = kind
            elif not line.startswith("# HELP "):
                match = sample.match(line)
                self.assertIsNotNone(match, line)
                assert match is not None
                self.assertIn(match.group(1), families)
                samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
        self.assertGreater(samples["tia_ticks_total"], 0)
        self.assertEqual(samples["tia_clients"], 1)
        self.assertEqual(samples["tia_streaming_clients"], 1)
        self.assertGreater(samples[f'tia_packets_sent_total{{client="{peer}",transport="TCP"}}'], 0)
        self.assertEqual(samples[f'tia_packets_dropped_total{{client="{peer}"}}'], 0)
        for name in ("tia_uptime_seconds", "tia_late_ticks_total", "tia_udp_send_errors_total", "tia_web_browsers"):
            self.assertIn(name, samples)
        self.assertEqual(families["tia_ticks_total"], "counter")
        self.assertEqual(families["tia_clients"], "gauge")

    @inlineCallbacks
    def test_foreign_host_names_are_refused_on_loopback(self) -> Any:
        response, _ = yield self.get("/status", host="attacker.example:8080")
        self.assertEqual(response.code, 403)
        response, _ = yield self.get("/status", host="localhost:8080")
        self.assertEqual(response.code, 200)

    @inlineCallbacks
    def test_only_get(self) -> Any:
        response = yield self.agent.request(b"POST", (self.base + "/status").encode())
        yield read_body(response)
        self.assertEqual(response.code, 405)


class StreamTests(WebTestCase):
    @inlineCallbacks
    def test_frames_carry_decimated_data_and_event_markers(self) -> Any:
        tap = self.web.display.tap
        self.assertNotIn(tap, self.service.hub.subscribers)  # nobody watches: no tap, no frame loop
        self.assertFalse(self.web.display._loop.running)
        reader = yield self.stream()
        yield reader.wait_for(15)
        self.assertIn(tap, self.service.hub.subscribers)
        name, meta = reader.events[0]
        self.assertEqual(name, "meta")
        self.assertEqual([s["type"] for s in meta["signals"]], ["eeg", "event"])
        self.assertEqual(meta["signals"][0]["factor"], decimation_factor(RATE))
        frames = reader.frames()
        factor = decimation_factor(RATE)
        segments = [s for frame in frames for s in frame["s"]]
        self.assertTrue(segments)
        for segment in segments:
            for channel in range(CHANNELS):
                shown = (np.asarray(segment["y"][channel]) * segment["q"][channel]).tolist()
                self.assertEqual(shown, pytest.approx(expected_buckets(segment, factor, channel + 1)))
        markers = [m for frame in frames for m in frame["m"]]
        self.assertTrue(markers)
        self.assertTrue(all(m["type"] == "event" and m["text"] in ("1", "2", "3") for m in markers))
        self.assertTrue(all(round(m["t"] * 10, 6) == round(m["t"] * 10) for m in markers))  # every 0.1 s
        # a steady frame rate: about 25 a second, whatever the packet rate (100/s here)
        times = [frame["now"] for frame in frames[1:]]
        self.assertLess(len(frames), 30)
        self.assertGreater(times[-1] - times[0], 0.3)

        reader.transport.stopProducing()  # the browser goes away
        yield reader.done
        yield until(lambda: not self.web.display.browsers)
        self.assertNotIn(tap, self.service.hub.subscribers)
        self.assertFalse(self.web.display._loop.running)

    @inlineCallbacks
    def test_the_status_counts_browsers_and_a_full_display_refuses(self) -> Any:
        self.web.display.max_browsers = 1
        reader = yield self.stream()
        yield reader.wait_for(2)
        response = yield self.agent.request(b"GET", (self.base + "/stream").encode())
        yield read_body(response)
        self.assertEqual(response.code, 503)
        _, body = yield self.get("/status")
        self.assertEqual(json.loads(body)["web"]["browsers"], 1)

    @inlineCallbacks
    def test_stopping_the_daemon_ends_the_streams(self) -> Any:
        reader = yield self.stream()
        yield reader.wait_for(2)
        yield self.web.stopService()
        yield reader.done
        self.assertEqual(self.web.display.browsers, [])
        self.assertNotIn(self.web.display.tap, self.service.hub.subscribers)


class SlowBrowserTests(WebTestCase):
    channels = 64
    frame_rate = 50.0

    @inlineCallbacks
    def test_a_browser_that_stops_reading_never_grows_memory(self) -> Any:
        _, _ = yield self.streaming_client()
        slow = self.unread_socket(self.web.port)
        slow.send(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        yield until(lambda: bool(self.web.display.browsers))
        browser: BrowserStream
        (browser,) = self.web.display.browsers
        (channel,) = [c for c in self.web.site.channels if c.transport is not None and c.transport.connected]
        transport: Any = channel.transport
        transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        transport.bufferSize = 16384  # pause sooner than Twisted's 64 KiB, so the test is short
        frame_size = 0

        def dropping() -> bool:
            nonlocal frame_size
            if browser.pending is not None:
                frame_size = max(frame_size, len(browser.pending))
            return browser.dropped > 20

        yield until(dropping)
        self.assertTrue(browser.paused)
        self.assertGreater(browser.dropped, 20)
        buffered = unsent_bytes(transport)
        self.assertLess(buffered, transport.bufferSize + 2 * frame_size + 1024)
        # the display never slowed the data clients down
        (control,) = self.service.factory.sessions
        assert control.tcp_data is not None
        self.assertEqual(control.tcp_data.dropped, 0)


class TakenPortTests(unittest.TestCase):
    @inlineCallbacks
    def test_a_taken_web_port_fails_start_up_before_streaming(self) -> Any:
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        self.addCleanup(taken.close)
        extra = MARKERS.replace("tcp:0", f"tcp:{taken.getsockname()[1]}")
        service = build_service(ramp_config(rate=RATE, blocksize=BLOCK, channels=CHANNELS, extra=extra))
        with self.assertRaisesRegex(ListenError, "cannot listen on .*Address already in use"):
            service.startService()
        self.assertFalse(service.clock.running)
        self.assertEqual(service.hub.ticks_sent, 0)
        yield until(lambda: service.factory.numPorts == 0)  # the control port, bound first, closes


class ExposureTests(unittest.TestCase):
    def test_binding_beyond_loopback_is_warned_about_and_host_names_are_then_allowed(self) -> None:
        from twisted.internet.address import IPv4Address

        from tia.web import WebMonitor

        service = build_service(ramp_config(rate=RATE, blocksize=BLOCK, channels=CHANNELS))
        log = LogCapture(self)

        bound = IPv4Address("TCP", "0.0.0.0", 8080)
        exposed = WebMonitor("tcp:8080:interface=0.0.0.0", service)
        self.assertFalse(exposed.loopback or exposed.site.check_host)
        exposed._announce(bound)
        loopback = WebMonitor("tcp:8080:interface=127.0.0.1", service)
        self.assertTrue(loopback.loopback and loopback.site.check_host)
        loopback._announce(bound)
        warnings = [line for level, line in log.lines if level == "warn"]
        self.assertEqual(len(warnings), 1)
        self.assertIn("not on loopback", warnings[0])
