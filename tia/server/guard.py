"""Defences of a server that sits on a lab network with clients written by students.

A hostile or broken peer must cost a bounded amount of log, memory and CPU
and never disturb the healthy clients. This module holds the small pieces
the channels share: a log that says a repeated event once and then only a
count (``RateLimitedLog``), the client-network allow-list and the
connection limits, overall and per host (``ConnectionGuard``), a
per-connection request budget (``RequestBudget``), the timers that close
the connections of a vanished peer (``harden_tcp``, which also reaches
beneath a TLS layer), and the start-up warning about a control port
reachable from beyond this machine (``exposure_warning``).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from twisted.internet.address import UNIXAddress
from twisted.internet.interfaces import IAddress, INegotiated, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger, LogLevel

from tia.config import DEFAULT_PEER_TIMEOUT, Network
from tia.protocol.control import build_error
from tia.protocol.endpoints import parse_description

log = Logger()


SUMMARY_SECONDS = 60.0
MAX_KEYS = 1024


class RateLimitedLog:
    """Logs the first event of each key, then at most one summary per ``interval`` seconds.

    Hostile input comes in floods: one log line per refused connection or
    broken request would let a client fill the disk. The summary names how
    many similar events were not logged since the last line.
    """

    def __init__(
        self, logger: Logger, interval: float = SUMMARY_SECONDS, seconds: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._seconds = seconds
        self._keys: OrderedDict[object, list[float]] = OrderedDict()  # key -> [last logged, suppressed]
        self.suppressed = 0

    def emit(self, key: object, format: str, level: LogLevel = LogLevel.warn, **fields: Any) -> bool:
        """Log ``format`` with ``fields`` unless ``key`` was logged less than ``interval`` ago."""
        now = self._seconds()
        entry = self._keys.get(key)
        if entry is not None:
            last, similar = entry
            if now - last < self.interval:
                entry[1] += 1
                self.suppressed += 1
                return False
            if similar:
                format += " ({similar} similar events not logged in the last {seconds:.0f} s)"
                fields.update(similar=int(similar), seconds=now - last)
        self._keys[key] = [now, 0]
        self._keys.move_to_end(key)
        while len(self._keys) > MAX_KEYS:  # many distinct peers: forget the oldest
            self._keys.popitem(last=False)
        self.logger.emit(level, format, **fields)
        return True


def host_allowed(host: str | None, networks: Sequence[Network]) -> bool:
    """Whether ``host`` may connect: everyone when ``networks`` is empty."""
    if not networks:
        return True
    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:10.0.0.1 is 10.0.0.1
    candidates = (address, mapped) if mapped is not None else (address,)
    return any(a.version == n.version and a in n for a in candidates for n in networks)


class ConnectionGuard:
    """The allow-list of client networks, the connection limits with their logs, and how long a
    silent peer keeps its connections (``peer_timeout``, for ``harden_tcp``)."""

    def __init__(
        self,
        networks: Sequence[Network] = (),
        max_connections: int = 0,
        max_per_host: int = 0,
        peer_timeout: int = DEFAULT_PEER_TIMEOUT,
    ) -> None:
        self.networks = tuple(networks)
        self.max_connections = max_connections
        self.max_per_host = max_per_host
        self.peer_timeout = peer_timeout
        self.log = RateLimitedLog(log)
        self.refused = 0

    def allows(self, host: str | None, channel: str) -> bool:
        """Whether ``host`` may open a ``channel`` connection; a refusal is counted and logged."""
        if host_allowed(host, self.networks):
            return True
        self.refused += 1
        self.log.emit(
            ("not allowed", channel, host),
            "refused a {channel} connection from {host}: not in the allowed networks",
            channel=channel, host=host,
        )
        return False

    def admits(self, address: IAddress | None, channel: str) -> bool:
        """``allows`` for a connecting address; a UNIX socket peer is local, never a network's."""
        if isinstance(address, UNIXAddress):
            return True
        return self.allows(getattr(address, "host", None), channel)

    def refusal(self, current: int, from_host: int, host: str | None, channel: str) -> str | None:
        """Why one more ``channel`` connection is refused, or None.

        ``current`` connections are open, ``from_host`` of them from ``host``;
        a refusal is counted and logged (once per channel, and per host for
        the per-host limit, then rate-limited).
        """
        if self.max_connections and current >= self.max_connections:
            self.refused += 1
            self.log.emit(
                ("full", channel), "refused a {channel} connection from {host}: {count} connections is the limit",
                channel=channel, host=host, count=self.max_connections,
            )
            return f"too many connections (limit {self.max_connections})"
        if self.max_per_host and from_host >= self.max_per_host:
            self.refused += 1
            self.log.emit(
                ("host full", channel, host),
                "refused a {channel} connection from {host}: {count} connections from one host is the limit",
                channel=channel, host=host, count=self.max_per_host,
            )
            return f"too many connections from {host} (limit {self.max_per_host} per host)"
        return None


class RefusalProtocol(Protocol):
    """Says why in one ``Error`` reply, then closes: the polite refusal beyond the limit."""

    def __init__(self, reason: str) -> None:
        self.reply = build_error(reason)

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.reply)
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        """Whatever it sent is ignored: the connection is closing."""


class RequestBudget:
    """A token bucket: ``rate`` requests per second on average, bursts of up to ``rate``.

    A student's loop that sends requests as fast as it can would otherwise
    take the reactor's time from every streaming client.
    """

    def __init__(self, rate: int, seconds: Callable[[], float]) -> None:
        self.rate = rate
        self._seconds = seconds
        self._tokens = float(rate)
        self._last = seconds()

    def take(self) -> bool:
        """Spend one request; False once the budget is exhausted (never when ``rate`` is 0)."""
        if not self.rate:
            return True
        now = self._seconds()
        elapsed = max(0.0, now - self._last)  # a wall clock stepping back refills nothing
        self._last = now
        self._tokens = min(float(self.rate), self._tokens + elapsed * self.rate)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def is_tls(transport: object) -> bool:
    """Whether ``transport`` is a TLS layer (``twisted.protocols.tls``) over the socket.

    Such a wrapper forwards unknown attributes (``socket``,
    ``loseWriteConnection``...) to the TCP connection beneath, so code that
    would use them on the raw socket must ask first: bytes written there skip
    the encryption. Only TLS transports negotiate (ALPN), hence ``INegotiated``.
    """
    return INegotiated.providedBy(transport)


class PeerTimers(NamedTuple):
    """The kernel's timers that make a vanished peer's connection fail (``keepalive_timers``)."""

    idle: int  # seconds of silence before the first keepalive probe
    interval: int  # seconds between probes
    probes: int  # unanswered probes that close the connection
    user_timeout_ms: int  # how long sent data may stay unacknowledged


def keepalive_timers(peer_timeout: int) -> PeerTimers:
    """Timers that close the connection of a peer silent for ``peer_timeout`` seconds, a little early.

    A vanished peer (cable pulled, laptop suspended, Wi-Fi gone) sends
    neither a FIN nor a reset. A connection that carries our data notices it
    through ``TCP_USER_TIMEOUT`` (data unacknowledged that long); a quiet one
    (control, server-state) through keepalive: the first probe after about
    half the time, then probes so that the last lands at the end. On Linux the
    user timeout also bounds keepalive. The timers end a tenth (at least a
    second) before ``peer_timeout``: the kernel runs timers this long up to a
    quarter of a second late, and the reactor needs a moment to close.
    """
    budget = max(2, peer_timeout - max(1, peer_timeout // 10))
    rest = budget - budget // 2
    interval = max(1, round(rest / 5))
    probes = max(1, rest // interval)
    idle = budget - interval * probes  # at least half the budget
    return PeerTimers(idle, interval, probes, budget * 1000)


def harden_tcp(transport: object, peer_timeout: int = DEFAULT_PEER_TIMEOUT) -> None:
    """Keepalive and a user timeout, so that a peer that vanished is closed within ``peer_timeout`` s.

    Linux's defaults wait two hours before the first probe and retransmit
    unacknowledged data for about fifteen minutes: a half-open connection
    would hold its state, its port and its ``max_connections`` slot that
    long. A peer that is alive but does not read for ``peer_timeout`` s
    (zero window) is closed too: the kernel cannot tell the two apart.
    """
    if not ITCPTransport.providedBy(transport):
        return
    transport.setTcpKeepAlive(True)  # type: ignore[attr-defined]
    sock: socket.socket | None = getattr(transport, "socket", None)
    if sock is None:
        return
    timers = keepalive_timers(peer_timeout)
    for name, value in (
        ("TCP_KEEPIDLE", timers.idle),
        ("TCP_KEEPINTVL", timers.interval),
        ("TCP_KEEPCNT", timers.probes),
        ("TCP_USER_TIMEOUT", timers.user_timeout_ms),
    ):
        option = getattr(socket, name, None)
        if option is None:
            continue  # not on this platform: the kernel's defaults apply
        try:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
        except OSError:
            pass


def endpoint_interface(description: str) -> str | None:
    """The ``interface=`` of a server endpoint string; ``None`` for all interfaces, ``""`` for unix."""
    parsed = parse_description(description)
    if parsed.kind == "unix":
        return ""
    return parsed.keyword("interface")


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine only; False for None (all)."""
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def exposure_warning(control: str, tls: str = "off") -> str | None:
    """The warning to log when ``control`` listens beyond loopback, else ``None``.

    ``tls``: ``off``, ``on`` (encrypted, anyone may connect) or ``mutual``
    (clients need a certificate: nothing to warn about).
    """
    interface = endpoint_interface(control)
    if interface == "" or (interface is not None and is_loopback(interface)) or tls == "mutual":
        return None
    where = "on every interface" if interface in (None, "0.0.0.0", "::") else f"on {interface}"
    if tls == "on":
        return (
            f"the control port listens {where} ({control}) with TLS but without client certificates: the "
            "signals are encrypted, yet every host that can reach it can read them; set [server] "
            "tls_client_ca or restrict [server] allow"
        )
    return (
        f"the control port listens {where} ({control}): TiA 1.0 has no authentication or encryption, so "
        "every host that can reach it can read all signals; restrict [server] allow, isolate the network, "
        "turn on TLS ([server] tls_certificate) or keep the default interface=127.0.0.1"
    )
