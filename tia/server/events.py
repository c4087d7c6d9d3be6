"""The injected-events endpoint: other programs post event codes over a tiny line protocol.

Off by default; ``[events] endpoint = tcp:9100:interface=127.0.0.1`` turns it
on (loopback: like the control port, anyone who reaches it can write into
the stream). One line per event, ``\\n``-terminated, answered ``OK`` or
``ERROR <reason>``; the grammar is in ``tia.sources.injected``. Each value
goes to an ``injected`` source and out in the next packet. The blocking
client behind ``tia event CODE`` is ``tia.client.events.post_event``.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver

from tia.server.guard import ConnectionGuard
from tia.sources.base import ISource
from tia.sources.injected import DEFAULT_EVENTS_PORT, MAX_LINE, EventRejected, EventRouter, InjectedEventSource

log = Logger()

__all__ = ["DEFAULT_EVENTS_PORT", "EventFactory", "EventLineProtocol", "events_factory"]


class EventLineProtocol(LineReceiver):
    """One poster: a line in, ``OK`` or ``ERROR <reason>`` out."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def __init__(self, router: EventRouter) -> None:
        self.router = router

    def lineReceived(self, line: bytes) -> None:
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError:
            self._reply("ERROR not UTF-8")
            return
        if not text:
            return  # blank lines (keep-alives) are ignored
        try:
            source = self.router.post(text)
        except EventRejected as error:
            log.info("event {line!r} refused: {reason}", line=text, reason=error)
            self._reply(f"ERROR {error}")
            return
        log.debug("event {line!r} queued for source [{name}]", line=text, name=source.spec.name)
        self._reply("OK")

    def lineLengthExceeded(self, line: bytes) -> None:
        self._reply(f"ERROR line longer than {self.MAX_LENGTH} bytes")
        assert self.transport is not None
        self.transport.loseConnection()

    def _reply(self, text: str) -> None:
        assert self.transport is not None
        self.transport.write(text.encode("utf-8") + b"\n")


class EventFactory(Factory):
    """Posters from outside ``[server] allow`` are closed at once, like control clients."""

    noisy = False

    def __init__(self, router: EventRouter, guard: ConnectionGuard | None = None) -> None:
        self.router = router
        self.guard = guard or ConnectionGuard()

    def buildProtocol(self, addr: IAddress | None) -> EventLineProtocol | None:  # type: ignore[override]
        if not self.guard.admits(addr, "posted-events"):
            return None
        protocol = EventLineProtocol(self.router)
        protocol.factory = self
        return protocol


def events_factory(sources: Sequence[ISource], guard: ConnectionGuard | None = None) -> EventFactory:
    """What ``[events] endpoint`` listens with: lines routed to the injected sources."""
    injected = [s for s in sources if isinstance(s, InjectedEventSource)]
    return EventFactory(EventRouter(injected), guard)
