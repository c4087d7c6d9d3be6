"""What the daemon is doing, for people (``/status`` JSON) and dashboards (``/metrics``).

Both are rendered from the server's read-only snapshot (``TiAService.status()``),
taken at request time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import tia

if TYPE_CHECKING:
    from tia.server.status import ServerStatus
    from tia.web.display import LiveDisplay


def status(server: ServerStatus, display: LiveDisplay, uptime: float) -> dict[str, Any]:
    """The ``/status`` document: the server's snapshot and the monitor's own counters."""
    document = server.to_json()
    document["uptime_seconds"] = round(uptime, 3)
    document["web"] = {
        "browsers": len(display.browsers),
        "frames_sent": display.sent_total,
        "frames_dropped": display.dropped_total,
        "frame_rate": display.frame_rate,
    }
    return document


# ---------------------------------------------------------------- Prometheus text format 0.0.4


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items()) + "}"


def _family(
    name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float | int]]
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        lines.append(f"{name}{_labels(labels)} {value!r}")
    return lines


def metrics(server: ServerStatus, display: LiveDisplay, uptime: float) -> str:
    """The ``/metrics`` page: one family per quantity, client families labelled by peer."""
    everyone = server.sessions
    connected = [c for c in everyone if c.transport is not None]
    lines: list[str] = []
    lines += _family("tia_info", "gauge", "Server version (value is always 1).", [({"version": tia.__version__}, 1)])
    lines += _family("tia_uptime_seconds", "gauge", "Seconds since the server started.", [({}, round(uptime, 3))])
    lines += _family("tia_packet_rate_hz", "gauge", "Configured packets per second.", [({}, server.packet_rate)])
    lines += _family("tia_ticks_total", "counter", "Packets (ticks) produced since start.", [({}, server.ticks_sent)])
    lines += _family(
        "tia_late_ticks_total", "counter", "Ticks produced late to catch up a stalled reactor.",
        [({}, server.late_ticks)],
    )
    lines += _family("tia_clients", "gauge", "Control connections.", [({}, len(everyone))])
    lines += _family(
        "tia_streaming_clients", "gauge", "Clients that started data transmission.",
        [({}, sum(1 for c in everyone if c.streaming))],
    )
    lines += _family(
        "tia_packets_sent_total", "counter", "Packets sent to a client's data connection.",
        [({"client": c.peer, "transport": c.transport or ""}, c.packets) for c in connected],
    )
    lines += _family(
        "tia_packets_dropped_total", "counter", "Packets dropped for a TCP client that fell behind.",
        [({"client": c.peer}, c.dropped) for c in connected if c.dropped is not None],
    )
    lines += _family(
        "tia_udp_datagrams_sent_total", "counter", "UDP datagrams sent.",
        [({}, server.udp_datagrams_sent)],
    )
    lines += _family(
        "tia_udp_send_errors_total", "counter", "UDP datagrams the kernel refused.",
        [({}, server.udp_send_errors)],
    )
    lines += _family(
        "tia_signal_channels", "gauge", "Channels per signal type.",
        [({"signal": s.type}, s.channels) for s in server.signals],
    )
    lines += _family(
        "tia_signal_sampling_rate_hz", "gauge", "Sampling rate per signal type.",
        [({"signal": s.type}, float(s.sampling_rate)) for s in server.signals],
    )
    lines += _family(
        "tia_source_up", "gauge", "1 while a source delivers (streaming or waiting for its device), else 0.",
        [({"source": h.name, "state": h.state}, int(h.state in ("streaming", "waiting"))) for h in server.sources],
    )
    lines += _family(
        "tia_source_missed_blocks_total", "counter", "Ticks a device-clocked source had no complete block.",
        [({"source": h.name}, h.missed_blocks) for h in server.sources],
    )
    lines += _family(
        "tia_source_overflow_samples_total", "counter", "Samples a device buffer dropped (over max_latency).",
        [({"source": h.name}, h.overflow_samples) for h in server.sources],
    )
    lines += _family(
        "tia_source_rate_error_ppm", "gauge", "Measured against nominal rate of a device-clocked source.",
        [({"source": h.name}, round(h.rate_error_ppm, 1)) for h in server.sources if h.rate_error_ppm is not None],
    )
    lines += _family("tia_web_browsers", "gauge", "Live views open.", [({}, len(display.browsers))])
    lines += _family("tia_web_frames_total", "counter", "Display frames built.", [({}, display.sent_total)])
    lines += _family(
        "tia_web_frames_dropped_total", "counter", "Display frames dropped for slow browsers.",
        [({}, display.dropped_total)],
    )
    return "\n".join(lines) + "\n"
