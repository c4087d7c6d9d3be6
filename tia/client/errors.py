"""The exceptions of both clients; no Twisted import, so the blocking client stays free of it.

The blocking client (seed API) raises one type, :class:`TiAError`, for what
stops a call from completing; refusals are boolean returns. The Twisted
client errbacks with a :class:`TiAClientError` subclass saying which side
failed: the server refused, the connection went away, or the peer broke the
wire contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tia.protocol.control import Command

if TYPE_CHECKING:
    from twisted.python.failure import Failure

__all__ = [
    "TiAClientError",
    "TiAConnectionLost",
    "TiAError",
    "TiAException",
    "TiAProtocolError",
    "TiAServerError",
]


class TiAError(Exception):
    """Blocking client: a timeout, a lost connection or a protocol violation; the call could not complete."""


# The seed's name for its exception, for scripts that catch it by that name.
TiAException = TiAError


class TiAClientError(Exception):
    """Twisted client: base of every error it reports, so callers can catch one type."""


class TiAServerError(TiAClientError):
    """The server answered ``Error`` or ``ValidationError``; ``text`` is its reason."""

    def __init__(self, text: str, command: str = Command.ERROR) -> None:
        super().__init__(text)
        self.text = text
        self.command = command


class TiAConnectionLost(TiAClientError):
    """The connection closed before the reply arrived (or before the request was sent)."""

    def __init__(self, message: str, reason: Failure | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class TiAProtocolError(TiAClientError):
    """The peer broke the wire contract: bad framing, an unexpected reply, a bad packet."""
