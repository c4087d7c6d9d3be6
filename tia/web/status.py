"""What the daemon is doing, for people (``/status`` JSON) and dashboards (``/metrics``).

Both are read from the live objects at request time: nothing is counted twice
and nothing costs anything between requests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import tia
from tia.web.display import channel_labels

if TYPE_CHECKING:
    from tia.server.control import TiAControlProtocol
    from tia.server.service import TiAService
    from tia.web.display import LiveDisplay


@dataclass(frozen=True)
class ClientStatus:
    peer: str  # host:port of the control connection
    transport: str | None  # "TCP", "UDP unicast", ...; None before GetDataConnection
    data_peer: str | None
    streaming: bool
    packets: int
    dropped: int | None  # None for UDP (send errors are counted per server)
    custom: bool


def _peer(control: TiAControlProtocol) -> str:
    peer = control.transport.getPeer() if control.transport is not None else None
    port = getattr(peer, "port", None)
    return f"{control.peer_host}:{port}" if port is not None else control.peer_host


def client_status(control: TiAControlProtocol) -> ClientStatus:
    """One control connection and its data connection, whichever transport it chose."""
    custom = control.custom is not None
    if control.tcp_data is not None:
        data = control.tcp_data
        return ClientStatus(_peer(control), "TCP", data.peer, control.started, data.packets, data.dropped, custom)
    if control.udp_destination is not None:
        destination = control.udp_destination
        mode = control.server.config.udp.mode
        host, port = destination.address
        return ClientStatus(
            _peer(control), f"UDP {mode}", f"{host}:{port}", control.started, destination.packets, None, custom
        )
    waiting = "TCP (not yet connected)" if control.tcp_listener is not None else None
    return ClientStatus(_peer(control), waiting, None, control.started, 0, None, custom)


def clients(service: TiAService) -> list[ClientStatus]:
    return sorted((client_status(c) for c in tuple(service.factory.controls)), key=lambda c: c.peer)


def status(service: TiAService, display: LiveDisplay, uptime: float) -> dict[str, Any]:
    """The ``/status`` document."""
    hub = service.hub
    sender = service.factory.udp_sender
    return {
        "version": tia.__version__,
        "uptime_seconds": round(uptime, 3),
        "packet_rate": float(hub.packet_rate),
        "ticks_sent": hub.ticks_sent,
        "stream_seconds": round(hub.ticks_sent / float(hub.packet_rate), 3),
        "late_ticks": service.clock.late_ticks,
        "control": service.config.control,
        "udp": {
            "mode": service.config.udp.mode,
            "datagrams_sent": sender.sent if sender is not None else 0,
            "send_errors": sender.errors if sender is not None else 0,
        },
        "signals": [
            {
                "type": signal.type.name,
                "sampling_rate": signal.sampling_rate,
                "block_size": signal.block_size,
                "channels": signal.num_channels,
                "labels": list(channel_labels(signal)),
                "aperiodic": signal.type.aperiodic,
            }
            for signal in hub.metainfo.signals
        ],
        "clients": [vars(client) for client in clients(service)],
        "web": {
            "browsers": len(display.browsers),
            "frames_sent": display.sent_total,
            "frames_dropped": display.dropped_total,
            "frame_rate": display.frame_rate,
        },
    }


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


def metrics(service: TiAService, display: LiveDisplay, uptime: float) -> str:
    """The ``/metrics`` page: one family per quantity, client families labelled by peer."""
    hub = service.hub
    sender = service.factory.udp_sender
    everyone = clients(service)
    connected = [c for c in everyone if c.transport is not None]
    lines: list[str] = []
    lines += _family("tia_info", "gauge", "Server version (value is always 1).", [({"version": tia.__version__}, 1)])
    lines += _family("tia_uptime_seconds", "gauge", "Seconds since the server started.", [({}, round(uptime, 3))])
    lines += _family("tia_packet_rate_hz", "gauge", "Configured packets per second.", [({}, float(hub.packet_rate))])
    lines += _family("tia_ticks_total", "counter", "Packets (ticks) produced since start.", [({}, hub.ticks_sent)])
    lines += _family(
        "tia_late_ticks_total", "counter", "Ticks produced late to catch up a stalled reactor.",
        [({}, service.clock.late_ticks)],
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
        [({}, sender.sent if sender is not None else 0)],
    )
    lines += _family(
        "tia_udp_send_errors_total", "counter", "UDP datagrams the kernel refused.",
        [({}, sender.errors if sender is not None else 0)],
    )
    lines += _family(
        "tia_signal_channels", "gauge", "Channels per signal type.",
        [({"signal": s.type.name}, s.num_channels) for s in hub.metainfo.signals],
    )
    lines += _family(
        "tia_signal_sampling_rate_hz", "gauge", "Sampling rate per signal type.",
        [({"signal": s.type.name}, float(s.sampling_rate)) for s in hub.metainfo.signals],
    )
    lines += _family("tia_web_browsers", "gauge", "Live views open.", [({}, len(display.browsers))])
    lines += _family("tia_web_frames_total", "counter", "Display frames built.", [({}, display.sent_total)])
    lines += _family(
        "tia_web_frames_dropped_total", "counter", "Display frames dropped for slow browsers.",
        [({}, display.dropped_total)],
    )
    return "\n".join(lines) + "\n"
