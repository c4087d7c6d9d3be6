"""Writing data packets straight to the kernel while Twisted holds nothing for the connection.

``transport.write`` appends to Twisted's buffer and has the reactor watch the
socket until it drains: two ``epoll_ctl`` calls and some bookkeeping per
packet, which for a thousand small packets a second per client costs more
than the ``send`` itself. While Twisted's buffer is empty a packet can go to
the socket directly; whatever the kernel does not take goes through
``transport.write`` as usual, so ordering, backpressure (``pauseProducing``)
and error handling stay Twisted's.

To know that the buffer is empty this module reads private fields of
``twisted.internet.tcp.Connection`` (those of ``abstract.FileDescriptor``):
``TWISTED_FIELDS``. ``DirectWriter.for_transport`` checks that they exist
with the types this code expects and otherwise returns None (logged once):
a Twisted release that changes them costs speed, never a sample, and
tests/test_fastpath.py fails loudly so that we notice.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet import tcp
from twisted.logger import Logger

log = Logger()

__all__ = ["TWISTED_FIELDS", "DirectWriter", "missing_fields"]

# The private buffer state of twisted.internet.abstract.FileDescriptor read here, with its types.
TWISTED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "_tempDataLen": int,  # bytes written since the last flush into dataBuffer
    "offset": int,  # how much of dataBuffer the kernel has taken
    "dataBuffer": bytes,
    "connected": int,  # bool or 0/1
    "disconnecting": int,
    "socket": socket.socket,
}

# Up to this size, ``send(header + body)`` beats ``sendmsg((header, body))`` (measured on loopback:
# 2.9 vs 4.6 us for a 289-byte packet); above it the copy costs more than the iovec.
SMALL_PACKET_BYTES = 16 * 1024

_RETRY_LATER = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.EINTR})
_warned = False


def missing_fields(transport: object) -> list[str]:
    """The ``TWISTED_FIELDS`` that ``transport`` lacks or holds with another type (empty: usable)."""
    return [
        name for name, kind in TWISTED_FIELDS.items()
        if not isinstance(getattr(transport, name, None), kind)
    ]


class DirectWriter:
    """Writes to one of Twisted's own TCP connections, bypassing its buffer while that is empty."""

    __slots__ = ("_socket", "_transport")

    def __init__(self, transport: tcp.Connection) -> None:
        self._transport: Any = transport
        self._socket: socket.socket = transport.socket

    @classmethod
    def for_transport(cls, transport: object) -> DirectWriter | None:
        """A writer for ``transport`` if it is Twisted's plain TCP connection with the fields we
        read; None otherwise (a TLS or other wrapping transport must do its own writing)."""
        if not isinstance(transport, tcp.Connection):
            return None
        missing = missing_fields(transport)
        if missing:
            global _warned
            if not _warned:
                _warned = True
                log.warn(
                    "this Twisted's TCP connections lack {fields}: data packets go through "
                    "transport.write (correct, a little slower)", fields=", ".join(missing),
                )
            return None
        return cls(transport)

    def write(self, header: bytes, body: bytes) -> None:
        """``header`` then ``body``, straight to the kernel whenever Twisted holds nothing."""
        transport = self._transport
        if (
            transport._tempDataLen or transport.offset != len(transport.dataBuffer)
            or not transport.connected or transport.disconnecting
        ):
            transport.writeSequence((header, body))
            return
        size = len(header) + len(body)
        try:
            if size <= SMALL_PACKET_BYTES:
                data = header + body
                sent = self._socket.send(data)
            else:
                data = b""
                sent = self._socket.sendmsg((header, body))
        except OSError as error:
            if error.errno not in _RETRY_LATER:
                transport.writeSequence((header, body))  # Twisted meets the error again and reports it
                return
            sent = 0
        if sent < size:
            # the kernel's buffer is full: the rest waits in Twisted's (bytes only, so a copy)
            transport.write((data or header + body)[sent:])
