"""The server-state channel: a port per local interface on which the server pushes its state.

A client asks for it with ``GetServerStateConnection``, connects, hears
``ServerStateRunning`` at once and ``ServerStateShutdown`` just before a
graceful stop closes every connection; it never writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IListeningPort, IReactorTCP
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.python.failure import Failure

from tia.protocol.control import SERVER_STATE_RUNNING, SERVER_STATE_SHUTDOWN
from tia.server.guard import ConnectionGuard, harden_tcp

if TYPE_CHECKING:
    from tia.server.tls import ServerTLS

__all__ = ["ServerStateChannel", "ServerStateProtocol"]


class ServerStateProtocol(Protocol):
    """Pushes server state; the client never writes."""

    def __init__(self, channel: ServerStateChannel) -> None:
        self.channel = channel
        self.host: str | None = None
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        harden_tcp(self.transport, self.channel.guard.peer_timeout)  # a vanished listener is dropped
        self.host = getattr(self.transport.getPeer(), "host", None)
        self.channel.clients.add(self)
        self.transport.write(SERVER_STATE_RUNNING)

    def dataReceived(self, data: bytes) -> None:
        """Nothing is expected from the client here."""

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.channel.clients.discard(self)
        self.closed.callback(None)


class ServerStateChannel(ServerFactory):
    """One server-state port per local interface, opened when first asked for."""

    noisy = False

    def __init__(
        self, reactor: IReactorTCP, guard: ConnectionGuard | None = None, tls: ServerTLS | None = None
    ) -> None:
        self.reactor = reactor
        self.guard = guard or ConnectionGuard()
        self.clients: set[ServerStateProtocol] = set()
        self.ports: dict[str, IListeningPort] = {}
        self._listening: ServerFactory = self if tls is None else tls.wrap(self, "server-state")

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        """None (the connection is closed at once) outside the allow-list or beyond the limits."""
        host = getattr(addr, "host", None)
        if not self.guard.admits(addr, "server-state"):
            return None
        from_host = sum(client.host == host for client in self.clients)
        if self.guard.refusal(len(self.clients), from_host, host, "server-state") is not None:
            return None
        return ServerStateProtocol(self)

    def port_for(self, host: str) -> int:
        if host not in self.ports:
            self.ports[host] = self.reactor.listenTCP(0, self._listening, interface=host)
        port: int = self.ports[host].getHost().port  # type: ignore[attr-defined]
        return port

    def announce_shutdown(self) -> None:
        for client in tuple(self.clients):
            if client.transport is not None:
                client.transport.write(SERVER_STATE_SHUTDOWN)
                client.transport.loseConnection()

    def stop_listening(self) -> None:
        for port in self.ports.values():
            port.stopListening()
        self.ports.clear()
