"""Typing shims of the Twisted client: the few transport, endpoint and reactor methods it calls.

Twisted's interfaces are zope interfaces, and many of its objects are typed
loosely (``transport`` is ``ITransport | None``, reactors are ``Any``). These
small ``typing.Protocol`` classes describe exactly what the client uses; the
objects are cast to them at the boundary, so the rest is checked strictly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.internet.protocol import Protocol as TwistedProtocol

__all__ = ["Clock", "Endpoint", "ListeningPort", "TCPTransport", "Transport", "UDPReactor", "transport_of"]


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def getPeer(self) -> IAddress: ...


class TCPTransport(Protocol):
    def setTcpNoDelay(self, enabled: bool) -> None: ...


class Endpoint(Protocol):
    def connect(self, protocolFactory: Factory[Any]) -> Deferred[Any]: ...


class ListeningPort(Protocol):
    def stopListening(self) -> Deferred[None] | None: ...


class UDPReactor(Protocol):
    def listenUDP(
        self, port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> ListeningPort: ...


class Clock(Protocol):
    def seconds(self) -> float: ...
    def callLater(self, delay: float, callable: Callable[[], object]) -> object: ...


def transport_of(protocol: TwistedProtocol) -> Transport | None:
    """``protocol.transport``, typed as what the client calls on it (None before connecting)."""
    return cast("Transport | None", protocol.transport)
