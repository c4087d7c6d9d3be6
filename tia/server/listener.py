"""A listening endpoint of the daemon, bound when asked and held by its ``IListeningPort``.

The control port, the ``[events]`` endpoint and the web monitor are bound
before anything streams, so a taken port stops the start-up with one line
naming the endpoint and where it was configured (``ListenError``), and the
bound port stays known (``tcp:0`` in tests) through Twisted's public
``IListeningPort``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IAddress, IListeningPort, IProtocolFactory
from twisted.python.failure import Failure

__all__ = ["ListenError", "Listener"]


class ListenError(Exception):
    """An endpoint that cannot be bound (port taken, no such interface, no permission)."""

    def __init__(self, description: str, what: str, reason: str) -> None:
        super().__init__(f"cannot listen on {description} ({what}): {reason}")
        self.description, self.what, self.reason = description, what, reason


class Listener:
    """``description`` (a Twisted server endpoint string) listening with ``factory``.

    ``what`` says where the endpoint was configured, for the error message
    (e.g. ``etc/server.ini [server] control``).
    """

    def __init__(self, description: str, factory: IProtocolFactory, reactor: Any, what: str) -> None:
        self.description = description
        self.factory = factory
        self.reactor = reactor
        self.what = what
        self.port: IListeningPort | None = None

    @property
    def bound(self) -> bool:
        return self.port is not None

    def bind(self) -> None:
        """Listen now (idempotent). Raises ``ListenError`` with the reason in one line."""
        if self.port is not None:
            return
        outcome: list[object] = []
        try:
            serverFromString(self.reactor, self.description).listen(self.factory).addBoth(outcome.append)
        except (ValueError, TypeError) as error:  # a malformed description (config checks the common ones)
            raise ListenError(self.description, self.what, str(error)) from None
        if not outcome:  # stream endpoints of a real reactor bind at once
            raise ListenError(self.description, self.what, "it did not bind at once")
        result = outcome[0]
        if isinstance(result, Failure):
            raise ListenError(self.description, self.what, _reason(result))
        assert IListeningPort.providedBy(result)
        self.port = result

    @property
    def address(self) -> IAddress:
        """Where it listens (``.port`` of a TCP address: the bound port number)."""
        if self.port is None:
            raise RuntimeError(f"{self.description} is not bound")
        return self.port.getHost()

    def close(self) -> Deferred[None]:
        """Stop listening; fires once the port is closed."""
        port, self.port = self.port, None
        stopped = None if port is None else port.stopListening()
        return defer.succeed(None) if stopped is None else stopped


def _reason(failure: Failure) -> str:
    """The cause of a bind failure in a few words: ``Address already in use``, not a traceback."""
    error = failure.value
    socket_error = getattr(error, "socketError", None)  # CannotListenError wraps the OSError
    if isinstance(socket_error, OSError) and socket_error.strerror:
        return socket_error.strerror
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
