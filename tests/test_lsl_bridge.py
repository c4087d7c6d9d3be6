"""The LSL bridge on loopback: a pylsl inlet reads what the daemon (or ``tia lsl``) publishes.

A ramp server publishes its signals as outlets ([lsl] outlets = on); an inlet
in another thread checks the stream's name, type, channel labels, units and
nominal rate, every value against the ramp, and every time stamp against the
documented mapping (anchor + sample / rate). ``tia lsl`` then does the same
as a client of a server that has no outlets of its own, and loads no server
module doing so.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from typing import Any

import numpy as np
from support import MARKERS, RAMP_INI, config_from_text
from twisted.internet import threads
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tia import cli
from tia.daemon import build_service
from tia.lsl.outlets import LSLOutletSink

try:
    import pylsl

    pylsl.local_clock()
    LSL_MISSING: str | None = None
except (ImportError, OSError, RuntimeError) as error:  # pylsl absent, or its liblsl does not load
    LSL_MISSING = f"pylsl/liblsl unavailable: {error}"

CHANNELS, BLOCK, RATE = 4, 10, 1000
LABELS = ["Fp1", "Fp2", "Cz", "Pz"]


def config(outlets: bool, source_id: str, server_extra: str = "") -> Any:
    lsl = f"\n[lsl]\noutlets = on\nsource_id = {source_id}\nname = Test\n" if outlets else ""
    text = RAMP_INI.format(
        rate=RATE, blocksize=BLOCK, channels=", ".join(LABELS), udp_mode="unicast", server_extra=server_extra
    )
    return config_from_text(text + MARKERS + lsl)


def pull(predicate: str, seconds: float, minimum: int) -> tuple[Any, list[list[float]], list[float]]:
    """Resolve one stream, then pull for ``seconds`` (at least ``minimum`` samples); in a thread."""
    found = pylsl.resolve_bypred(predicate, 1, 10.0)
    assert found, f"no LSL stream {predicate} within 10 s"
    inlet = pylsl.StreamInlet(found[0], max_buflen=30)
    info = inlet.info(10.0)
    inlet.open_stream(10.0)
    samples: list[list[float]] = []
    stamps: list[float] = []
    deadline = time.monotonic() + 15
    stop_at = time.monotonic() + seconds
    while (time.monotonic() < stop_at or len(samples) < minimum) and time.monotonic() < deadline:
        chunk, times = inlet.pull_chunk(timeout=0.1)
        samples.extend(chunk)
        stamps.extend(times)
    inlet.close_stream()
    return info, samples, stamps


def channel_descriptions(info: Any) -> list[tuple[str, str, str]]:
    result = []
    channel = info.desc().child("channels").child("channel")
    while not channel.empty():
        result.append((channel.child_value("label"), channel.child_value("unit"), channel.child_value("type")))
        channel = channel.next_sibling()
    return result


class LSLBridgeTests(unittest.TestCase):
    timeout = 60
    skip = LSL_MISSING

    def check_ramp(self, samples: list[list[float]], first_sample: int) -> None:
        """Every sample is the ramp's, in order from ``first_sample``, bit for bit."""
        values = np.array(samples, dtype=np.float32)
        k = np.arange(first_sample, first_sample + len(values))
        expected = np.stack([c * 1000 + k % 1000 for c in range(1, CHANNELS + 1)], axis=1).astype(np.float32)
        np.testing.assert_array_equal(values, expected)

    @inlineCallbacks
    def test_server_outlets_exact_values_labels_rate_and_time_stamps(self) -> Any:
        source_id = f"test-{uuid.uuid4().hex}"
        service = build_service(config(True, source_id))
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        eeg_pull = threads.deferToThread(pull, f"source_id='{source_id}/eeg'", 1.0, 500)
        events_pull = threads.deferToThread(pull, f"source_id='{source_id}/event'", 1.0, 3)
        info, samples, stamps = yield eeg_pull
        marker_info, markers, marker_stamps = yield events_pull

        self.assertEqual(info.name(), "Test-eeg")
        self.assertEqual(info.type(), "EEG")
        self.assertEqual(info.channel_count(), CHANNELS)
        self.assertEqual(info.nominal_srate(), RATE)
        self.assertEqual(info.channel_format(), pylsl.cf_float32)
        self.assertEqual(channel_descriptions(info), [(label, "microvolts", "EEG") for label in LABELS])

        sink = service.getServiceNamed("lsl").sink
        assert isinstance(sink, LSLOutletSink)
        anchor, first_id = sink.anchor.anchor, sink.anchor.first_id
        assert first_id is not None
        self.assertEqual(first_id, 0)
        # The documented mapping: sample k of the server is at anchor + k / rate on LSL's clock.
        first_sample = round((stamps[0] - anchor) * RATE)
        self.assertGreaterEqual(len(samples), 500)
        self.check_ramp(samples, first_sample)
        expected_stamps = anchor + (first_sample + np.arange(len(stamps))) / RATE
        np.testing.assert_allclose(stamps, expected_stamps, rtol=0, atol=1e-6)
        self.assertLess(abs(pylsl.local_clock() - stamps[-1]), 5.0)  # on LSL's clock, not another

        self.assertEqual(marker_info.name(), "Test-event")
        self.assertEqual(marker_info.type(), "Markers")
        self.assertEqual(marker_info.nominal_srate(), pylsl.IRREGULAR_RATE)
        self.assertGreaterEqual(len(markers), 3)
        packet_ids = [round((stamp - anchor) * RATE / BLOCK) for stamp in marker_stamps]
        for packet_id, stamp, (code,) in zip(packet_ids, marker_stamps, markers, strict=True):
            self.assertEqual(packet_id % 10, 0)  # one event every 0.1 s, first at 0.1 s
            self.assertEqual(code, 5.0 if (packet_id // 10) % 2 else 6.0)
            self.assertAlmostEqual(stamp, anchor + packet_id * BLOCK / RATE, delta=1e-6)
        yield service.stopService()
        self.assertEqual(sink.dropped, 0)
        self.assertEqual(sink.errors, 0)

    def test_tia_lsl_republishes_a_remote_server(self) -> Any:
        return self.republish("channel-major")

    def test_tia_lsl_republishes_a_sample_major_server(self) -> Any:
        return self.republish("sample-major")

    @inlineCallbacks
    def republish(self, order: str) -> Any:
        """``tia lsl --sample-order ORDER`` against a server sending its samples in that order."""
        source_id = f"cli-{uuid.uuid4().hex}"
        service = build_service(config(False, "unused", f"sample_order = {order}"))
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        self.assertNotIn("lsl", service.namedServices)
        address = f"127.0.0.1:{service.control_port}"
        bridge = threads.deferToThread(
            cli.main, ["lsl", address, "--seconds", "3", "--source-id", source_id, "--sample-order", order]
        )
        info, samples, stamps = yield threads.deferToThread(pull, f"source_id='{source_id}/eeg'", 0.8, 300)
        code = yield bridge
        self.assertEqual(code, 0)
        self.assertEqual(info.name(), "TiA-eeg")
        self.assertEqual(info.nominal_srate(), RATE)
        self.assertEqual([label for label, _, _ in channel_descriptions(info)], LABELS)
        # No anchor to compare with here; the ramp itself says which sample came first (k % 1000).
        self.check_ramp(samples, int(samples[0][0]) - 1000)
        np.testing.assert_allclose(np.diff(stamps), 1 / RATE, rtol=0, atol=1e-6)  # the packet grid

    def test_unavailable_server_is_an_error_not_a_traceback(self) -> None:
        self.assertEqual(cli.main(["lsl", "127.0.0.1:1", "--seconds", "1", "--timeout", "1"]), 1)


def test_tia_lsl_loads_no_server() -> None:
    """Layers: ``tia lsl`` (tia.lsl.republish) and the shared publisher sit on the client, not the server."""
    code = ("import json, sys; import tia.lsl.publisher, tia.lsl.republish; "
            "print(json.dumps(sorted(sys.modules)))")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = [name for name in json.loads(child.stdout)
              if name.startswith(("tia.server", "tia.config", "tia.recording", "pylsl"))]
    assert loaded == [], loaded
