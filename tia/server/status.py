"""Read-only snapshots of what the daemon is doing, for /status, /metrics and ``GetServerStatus``.

Built from the live objects when asked for: nothing is counted twice and
nothing costs anything between requests. Readers never touch the sessions,
the hub or the sockets themselves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tia.server.hub import SourceHealth

__all__ = ["ServerStatus", "SessionStatus", "SignalStatus", "SourceHealth"]


@dataclass(frozen=True)
class SessionStatus:
    """One control connection and its data connection, whichever transport it chose."""

    peer: str  # host:port of the control connection
    transport: str | None  # "TCP", "UDP unicast", ...; None before GetDataConnection
    data_peer: str | None
    streaming: bool
    packets: int
    dropped: int | None  # None for UDP (send errors are counted per server)
    custom: bool


@dataclass(frozen=True)
class SignalStatus:
    type: str
    sampling_rate: float
    block_size: int
    channels: int
    labels: tuple[str, ...]
    aperiodic: bool


@dataclass(frozen=True)
class ServerStatus:
    """The whole daemon at one moment."""

    version: str
    uptime_seconds: float
    packet_rate: float
    ticks_sent: int
    late_ticks: int
    skipped_ticks: int
    control: str
    udp_mode: str
    udp_datagrams_sent: int
    udp_send_errors: int
    signals: tuple[SignalStatus, ...]
    sessions: tuple[SessionStatus, ...]
    sources: tuple[SourceHealth, ...]

    @property
    def stream_seconds(self) -> float:
        return self.ticks_sent / self.packet_rate if self.packet_rate else 0.0

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types, in the layout /status and ``GetServerStatus`` send."""
        return {
            "version": self.version,
            "uptime_seconds": round(self.uptime_seconds, 3),
            "packet_rate": self.packet_rate,
            "ticks_sent": self.ticks_sent,
            "stream_seconds": round(self.stream_seconds, 3),
            "late_ticks": self.late_ticks,
            "skipped_ticks": self.skipped_ticks,
            "control": self.control,
            "udp": {
                "mode": self.udp_mode,
                "datagrams_sent": self.udp_datagrams_sent,
                "send_errors": self.udp_send_errors,
            },
            "signals": [{**asdict(s), "labels": list(s.labels)} for s in self.signals],
            "clients": [asdict(s) for s in self.sessions],
            "sources": [asdict(s) for s in self.sources],
        }
