"""Plain-socket plumbing of the blocking clients: connecting, deadlines, and errors as text.

Shared by :class:`~tia.client.blocking.TiAClient` and
:func:`~tia.client.events.post_event`, so that both connect the same way and
word a failure the same way (``cannot connect to HOST:PORT: <reason>``).
No Twisted here.
"""

from __future__ import annotations

import socket
import time

__all__: list[str] = []  # helpers of the client modules, not part of the public API

UDP_RECV_BUFFER = 8 << 20


def open_tcp(host: str, port: int, timeout: float | None) -> socket.socket:
    """Open a TCP connection with Nagle off; a seam so that tests can substitute the socket."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def open_udp(server_address: str, port: int) -> socket.socket:
    """Bind a UDP socket on every local address at ``port``, in the server's family."""
    family = socket.getaddrinfo(server_address, port, type=socket.SOCK_DGRAM)[0][0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        # The reference broadcasts to one fixed port: let several clients share it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # A big buffer rides out bursts while the caller is busy; the kernel may cap it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECV_BUFFER)
        sock.bind(("::" if family == socket.AF_INET6 else "", port))
    except OSError:
        sock.close()
        raise
    return sock


def deadline(timeout: float | None) -> float | None:
    """The monotonic time ``timeout`` seconds from now (None: no limit)."""
    return None if timeout is None else time.monotonic() + timeout


def remaining(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (None: no limit); raises TimeoutError when none."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def check_timeout(timeout: float | None) -> float | None:
    """``timeout`` itself, if it is positive or None."""
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be positive or None, not {timeout!r}")
    return timeout


def host_port(host: str, port: int) -> str:
    """``HOST:PORT`` as messages show it, an IPv6 address in brackets: ``[::1]:9000``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe(error: OSError) -> str:
    """The reason of a socket error without the errno prefix: ``Connection refused``."""
    return error.strerror or str(error) or type(error).__name__
