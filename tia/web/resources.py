"""The monitor's HTTP resources: the page, its static files, /status, /metrics and /stream.

Everything is GET-only and read-only: the monitor can look, never steer. The
page and its three files are read from the package once, so there is no file
system walk, no directory listing and no path to traverse.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http import HTTPChannel
from twisted.web.pages import forbidden, notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from tia.server.guard import ConnectionGuard
from tia.web.display import BrowserStream, LiveDisplay
from tia.web.status import metrics, status

if TYPE_CHECKING:
    from tia.server.service import TiAService

log = Logger()

STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
PAGE_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
CLOSE_GRACE_SECONDS = 1.0


def _common_headers(request: Request, content_type: str) -> None:
    request.setHeader(b"content-type", content_type.encode())
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")


class ReadOnly(Resource):
    """GET and HEAD only: anything else is a plain 405 (never Twisted's deprecated error pages)."""

    def render(self, request: Request) -> bytes | int:
        if not hasattr(self, "render_GET"):
            request.setResponseCode(404)
            _common_headers(request, "text/plain; charset=utf-8")
            return b"not found\n"
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            _common_headers(request, "text/plain; charset=utf-8")
            return b"the monitor is read-only: GET only\n"
        result: bytes | int = super().render(request)
        return result


class Folder(ReadOnly):
    """A resource of named children only; anything else is a plain 404."""

    def getChild(self, path: bytes, request: Request) -> IResource:
        return notFound()


class StaticBlob(ReadOnly):
    """One packaged file, held in memory."""

    isLeaf = True

    def __init__(self, body: bytes, content_type: str) -> None:
        super().__init__()
        self.body = body
        self.content_type = content_type

    def render_GET(self, request: Request) -> bytes:
        if request.postpath not in ([], [b""]):
            request.setResponseCode(404)
            return b"not found"
        _common_headers(request, self.content_type)
        if self.content_type.startswith("text/html"):
            request.setHeader(b"content-security-policy", PAGE_POLICY)
            request.setHeader(b"x-frame-options", b"DENY")
        return self.body

    def render_HEAD(self, request: Request) -> bytes:
        return _head(request, self.render_GET(request))


def _head(request: Request, body: bytes) -> bytes:
    """A HEAD reply: the GET headers and length, no body (Twisted would log a warning for one)."""
    request.setHeader(b"content-length", b"%d" % len(body))
    return b""


def static_files() -> dict[str, StaticBlob]:
    folder = resources.files("tia.web").joinpath("static")
    return {name: StaticBlob(folder.joinpath(name).read_bytes(), kind) for name, kind in STATIC_FILES.items()}


class DocumentResource(ReadOnly):
    """A document computed per request (/status, /metrics)."""

    isLeaf = True

    def __init__(self, build: Callable[[], bytes], content_type: str) -> None:
        super().__init__()
        self.build = build
        self.content_type = content_type

    def render_GET(self, request: Request) -> bytes:
        _common_headers(request, self.content_type)
        return self.build()

    def render_HEAD(self, request: Request) -> bytes:
        return _head(request, self.render_GET(request))


class StreamResource(ReadOnly):
    """``/stream``: Server-Sent Events, a ``meta`` event then one display frame per message."""

    isLeaf = True

    def __init__(self, display: LiveDisplay) -> None:
        super().__init__()
        self.display = display

    def render_HEAD(self, request: Request) -> bytes:
        _common_headers(request, "text/event-stream; charset=utf-8")
        return b""

    def render_GET(self, request: Request) -> bytes | int:
        peer = request.getClientAddress()
        name = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"
        if len(self.display.browsers) >= self.display.max_browsers:
            request.setResponseCode(503)
            _common_headers(request, "text/plain; charset=utf-8")
            return f"at most {self.display.max_browsers} live views at once\n".encode()
        _common_headers(request, "text/event-stream; charset=utf-8")
        request.setHeader(b"x-accel-buffering", b"no")  # a reverse proxy must not batch the frames
        request.write(self.display.hello())

        def finish() -> None:
            if request.channel is not None:  # still connected
                request.unregisterProducer()
                request.finish()

        browser = BrowserStream(request.write, finish, name)
        request.registerProducer(browser, True)
        self.display.add(browser)

        def gone(result: object) -> None:
            browser.closed = True
            self.display.remove(browser)

        request.notifyFinish().addBoth(gone)
        return NOT_DONE_YET


def root_resource(service: TiAService, display: LiveDisplay, uptime: Callable[[], float]) -> Resource:
    root = Folder()
    files = static_files()
    root.putChild(b"", files["index.html"])
    folder = Folder()
    for name, blob in files.items():
        folder.putChild(name.encode(), blob)
    root.putChild(b"static", folder)

    def status_json() -> bytes:
        return json.dumps(status(service.status(), display, uptime()), indent=1).encode() + b"\n"

    def metrics_text() -> bytes:
        return metrics(service.status(), display, uptime()).encode()

    root.putChild(b"status", DocumentResource(status_json, "application/json"))
    root.putChild(b"metrics", DocumentResource(metrics_text, "text/plain; version=0.0.4; charset=utf-8"))
    root.putChild(b"stream", StreamResource(display))
    return root


def _local_name(host: str) -> bool:
    """A Host header a page served from this loopback port may carry: an IP literal or localhost."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _TrackedChannel(HTTPChannel):
    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)
        site: MonitorSite = self.site  # type: ignore[attr-defined]
        site.channel_lost(self)


class MonitorSite(Site):
    """A ``Site`` that keeps no access log, refuses foreign Host names and can close its connections.

    ``check_host``: on a loopback port, a request naming a host other than an IP
    literal or localhost comes from a page whose name was re-pointed at this
    machine (DNS rebinding), which must not read the signals: 403.
    """

    noisy = False
    protocol = _TrackedChannel  # type: ignore[assignment]  # plain HTTP/1.1, no HTTP/2 negotiation

    def __init__(
        self, resource: IResource, reactor: IReactorTime, check_host: bool, guard: ConnectionGuard | None = None
    ) -> None:
        super().__init__(resource, reactor=reactor)
        self.check_host = check_host
        self.reactor = reactor
        self.guard = guard or ConnectionGuard()
        self.channels: dict[HTTPChannel, Deferred[None]] = {}

    def buildProtocol(self, addr: Any) -> Any:
        """None (closed at once, logged rate-limited) for a peer outside ``[server] allow``."""
        if not self.guard.admits(addr, "web monitor"):
            return None
        channel = super().buildProtocol(addr)
        self.channels[channel] = Deferred()
        return channel

    def channel_lost(self, channel: HTTPChannel) -> None:
        done = self.channels.pop(channel, None)
        if done is not None:
            done.callback(None)

    def log(self, request: http.Request) -> None:
        """No access log: a page polling /status would write a line a second."""

    def getResourceFor(self, request: Request) -> IResource:
        if self.check_host:
            host = request.getRequestHostname().decode("ascii", "replace")
            if not _local_name(host):
                return forbidden("Forbidden", "This monitor answers to localhost and IP addresses only.")
        resource: IResource = super().getResourceFor(request)
        return resource

    def close_connections(self) -> Deferred[Any]:
        """Close every HTTP connection (ending event streams first); abort what lingers."""
        waiting = list(self.channels.values())
        for channel in tuple(self.channels):
            if channel.transport is not None:
                channel.transport.loseConnection()
        done: Deferred[Any] = DeferredList(waiting, consumeErrors=True)
        if waiting:
            timer = self.reactor.callLater(CLOSE_GRACE_SECONDS, self._abort)
            done.addBoth(lambda result: timer.cancel() if timer.active() else None)
        return done

    def _abort(self) -> None:
        for channel in tuple(self.channels):
            if channel.transport is not None:
                channel.transport.abortConnection()  # type: ignore[attr-defined]
