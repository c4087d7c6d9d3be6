"""The live web monitor: a scope, the server's status and metrics, served by the daemon itself.

Off by default; ``--web tcp:8080`` or ``[web] endpoint = tcp:8080`` turns it on
(a TCP endpoint without ``interface=`` binds loopback: the page shows raw
biosignals and who is connected, with no authentication). One page (vanilla
JavaScript and a canvas, shipped in ``static/``), ``/status`` (JSON),
``/metrics`` (Prometheus text) and ``/stream`` (Server-Sent Events carrying
display frames, see ``tia.web.display``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from tia.config.reader import place
from tia.server.guard import endpoint_interface, is_loopback
from tia.server.listener import Listener
from tia.web.display import FRAME_RATE, LiveDisplay
from tia.web.resources import MonitorSite, root_resource

if TYPE_CHECKING:
    from tia.server.service import TiAService

log = Logger()

__all__ = ["WebMonitor", "attach_web"]


class WebMonitor(Service):
    """The monitor's listening port, its HTTP connections and its live display."""

    name = "web"

    def __init__(self, endpoint: str, service: TiAService, frame_rate: float = FRAME_RATE) -> None:
        self.endpoint = endpoint
        self.display = LiveDisplay(service.hub, service.reactor, frame_rate)
        self._started = time.monotonic()
        kind = endpoint.split(":", 1)[0]
        self.loopback = kind in ("tcp", "tcp6") and is_loopback(endpoint_interface(endpoint))
        root = root_resource(service, self.display, self.uptime)
        self.site = MonitorSite(root, service.reactor, check_host=self.loopback, guard=service.guard)
        where = place(service.config.path, "web", "endpoint") if service.config.path else "--web or [web] endpoint"
        self.listener = Listener(endpoint, self.site, service.reactor, where)

    def uptime(self) -> float:
        return time.monotonic() - self._started

    def bind(self) -> None:
        """Listen now (idempotent), so a taken port fails start-up before anything streams."""
        self.listener.bind()

    @property
    def port(self) -> int:
        """The bound TCP port (useful with ``tcp:0``)."""
        port: int = self.listener.address.port  # type: ignore[attr-defined]
        return port

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self.bind()

    def startService(self) -> None:
        super().startService()
        self.bind()
        self._started = time.monotonic()
        self._announce(self.listener.address)

    def _announce(self, address: Any) -> None:
        if isinstance(address, UNIXAddress):
            log.info("live monitor on the UNIX socket {path}", path=address.name)
            return
        host = f"[{address.host}]" if ":" in address.host else address.host
        log.info("live monitor at {url}", url=f"http://{host}:{address.port}/")
        if not self.loopback:
            log.warn(
                "the live monitor listens on {endpoint}, not on loopback: anyone who reaches it sees the "
                "live signals and the clients' addresses (there is no authentication)", endpoint=self.endpoint,
            )

    def stopService(self) -> Deferred[Any]:
        """End the event streams, close every connection, stop listening."""
        super().stopService()
        self.display.close()
        closing = self.site.close_connections()
        done: Deferred[Any] = defer.DeferredList([closing, self.listener.close()], consumeErrors=True)
        return done


def attach_web(service: TiAService, endpoint: str, frame_rate: float = FRAME_RATE) -> WebMonitor:
    """Give ``service`` the live monitor on ``endpoint`` (a Twisted server endpoint string)."""
    monitor = WebMonitor(endpoint, service, frame_rate)
    monitor.setServiceParent(service)
    return monitor
