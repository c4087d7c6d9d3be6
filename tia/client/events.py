"""Posting event codes to a txtia server's ``[events]`` endpoint, blocking (behind ``tia event``).

The endpoint (a txtia extension, off by default) speaks a tiny line protocol
over plain TCP: one line per event, ``[TARGET] VALUE [VALUE ...]``, answered
``OK`` or ``ERROR <reason>``. The server sends each value in its next packet.
"""

from __future__ import annotations

import tia.client.sockets as sockets
from tia.client.errors import TiAError

__all__ = ["DEFAULT_EVENTS_PORT", "post_event"]

DEFAULT_EVENTS_PORT = 9100
"""The endpoint's port when a user names only the host (as tia.sources.injected has it)."""
MAX_REPLY = 4096
"""Longest reply line read: the server's are short, an endless one is not waited for."""


def post_event(host: str, port: int, line: str, timeout: float = 5.0) -> str:
    """Send one event line and return the server's reply, ``OK`` or ``ERROR <reason>``.

    Raises :class:`TiAError` when the endpoint cannot be reached (``cannot
    connect to HOST:PORT: <reason>``), does not answer within ``timeout``
    seconds or closes without an answer; ``ValueError`` for more than one line.
    """
    if "\n" in line or "\r" in line:
        raise ValueError("one event per line")
    where = sockets.host_port(host, port)
    try:
        connection = sockets.open_tcp(host, port, timeout)
    except OSError as error:
        raise TiAError(f"cannot connect to {where}: {sockets.describe(error)}") from None
    reply = b""
    with connection:
        try:
            connection.sendall(line.encode("utf-8") + b"\n")
            while not reply.endswith(b"\n"):
                chunk = connection.recv(1024)
                if not chunk:
                    break
                reply += chunk
                if len(reply) > MAX_REPLY:
                    raise TiAError(f"{where} sent a reply longer than {MAX_REPLY} bytes")
        except TimeoutError:
            raise TiAError(f"no reply from {where} within {timeout:g} s") from None
        except OSError as error:
            raise TiAError(f"connection to {where} lost: {sockets.describe(error)}") from None
    if not reply:
        raise TiAError(f"{where} closed the connection without a reply")
    return reply.decode("utf-8", "replace").strip()
