"""The machine's floor: what any server pays to send the W1/W2 streams, Twisted or not.

``python -m bench.floor [--clients 0 10 50] [--multicast 1 200] [--seconds 10]``

A minimal sender with no reactor, no hub and no per-client bookkeeping:
one periodic timerfd at 1 kHz, and per tick one ``send`` of a prebuilt
W1-sized packet (33-byte header + 64 float32 channels) to each of K TCP
connections, read and discarded by another process. Its CPU (getrusage) is
the cost of waking 1000 times a second plus the kernel's loopback TCP work,
which Linux charges to the sending process; a daemon cannot go below it on
this machine whatever language it is written in, so the table shows how much
of the daemon's own CPU (``python -m bench -w W1``) is overhead of ours.
``--multicast K``: one ``sendto`` a tick to W4's group with K loopback
receivers (the kernel copies the datagram to each, on the sender's time).
The last rows are the other fixed costs of the daemon's design, ticking at
1 kHz with no work: Twisted's reactor waking on a timerfd, a plain Twisted
``LoopingCall``, and our master clock (a ``LoopingCall`` on the timerfd clock).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import select
import socket
import time
from typing import Any

import numpy as np

from bench.__main__ import MULTICAST_GROUP
from tia.protocol.packet import encode_body, encode_header
from tia.server.precise_clock import Timerfd

RATE = 1000
FLAGS, BODY = encode_body([(1, np.zeros((64, 1)))])  # W1's packet: one EEG block of 64 channels x 1 sample


def _receiver(port: int, count: int, ready: Any, multicast: bool = False) -> None:
    """Connect ``count`` sockets (or join them to the group) and drain them until the sender says stop."""
    if multicast:
        _multicast_receiver(port, count, ready)
        return
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    ready.set()
    selector = select.epoll()
    for sock in sockets:
        selector.register(sock.fileno(), select.EPOLLIN)
    by_fd = {sock.fileno(): sock for sock in sockets}
    open_count = count
    while open_count:
        for fd, _ in selector.poll():
            if not by_fd[fd].recv(65536):
                selector.unregister(fd)
                open_count -= 1


def _multicast_receiver(port: int, count: int, ready: Any) -> None:
    membership = socket.inet_aton(MULTICAST_GROUP) + socket.inet_aton("127.0.0.1")
    poller = select.epoll()
    sockets = []
    for _ in range(count):
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        receiver.bind(("", port))
        receiver.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        receiver.setblocking(False)
        poller.register(receiver.fileno(), select.EPOLLIN)
        sockets.append(receiver)
    by_fd = {receiver.fileno(): receiver for receiver in sockets}
    ready.set()
    while True:
        for fd, _ in poller.poll():
            try:
                if by_fd[fd].recv(65536) == b"stop":
                    return
            except BlockingIOError:
                pass


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(clients: int, seconds: float, multicast: bool = False) -> tuple[float, float]:
    """(CPU % of one core, microseconds of CPU per tick) for ``clients`` connections or receivers."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=max(clients, 1))
    port = listener.getsockname()[1]
    ready = multiprocessing.Event()
    process = multiprocessing.Process(target=_receiver, args=(port, clients, ready, multicast), daemon=True)
    process.start()
    connections = []
    group = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if multicast:
        group.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        group.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        group.setblocking(False)
        group.connect((MULTICAST_GROUP, port))
        connections.append(group)
    else:
        for _ in range(clients):
            connection, _ = listener.accept()
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.setblocking(False)
            connections.append(connection)
    ready.wait(30)
    timer = Timerfd()
    timer.arm(time.monotonic_ns() + 10_000_000, 1_000_000_000 // RATE)  # periodic: the kernel re-arms it
    poller = select.epoll()
    poller.register(timer.fd, select.EPOLLIN)
    ticks = 0
    cpu_start, wall_start = _cpu(), time.monotonic()
    while time.monotonic() - wall_start < seconds:
        poller.poll(1.0)
        expirations = timer.drain()
        for _ in range(expirations):
            header = encode_header(len(BODY), FLAGS, ticks, 0, ticks)
            packet = header + BODY
            for connection in connections:
                try:
                    connection.send(packet)
                except (BlockingIOError, ConnectionRefusedError):
                    pass
            ticks += 1
    cpu, wall = _cpu() - cpu_start, time.monotonic() - wall_start
    if multicast:
        group.send(b"stop")
    for connection in connections:
        connection.close()
    group.close()
    listener.close()
    timer.close()
    process.join(10)
    return 100 * cpu / wall, 1e6 * cpu / max(ticks, 1)


TWISTED_FLOORS = {
    "reactor": "Twisted's epoll reactor waking on one periodic timerfd reader, no work",
    "loopingcall": "a Twisted LoopingCall on the reactor's own timers, no work",
    "masterclock": "our master clock (LoopingCall on the timerfd PreciseClock), no work",
}


def _twisted_floor(kind: str, seconds: float, results: Any) -> None:
    """In a child process (a reactor runs once): one of ``TWISTED_FLOORS`` ticking at 1 kHz."""
    from fractions import Fraction

    from twisted.internet import reactor
    from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor
    from twisted.internet.task import LoopingCall
    from twisted.python.failure import Failure
    from zope.interface import implementer

    from tia.server.clock import MasterClock, best_clock

    ticks = [0]
    stop: Any
    if kind == "reactor":
        timer = Timerfd()

        @implementer(IReadDescriptor)
        class Reader:
            def fileno(self) -> int:
                return timer.fd

            def doRead(self) -> None:
                ticks[0] += timer.drain()

            def connectionLost(self, reason: Failure) -> None:
                pass

            def logPrefix(self) -> str:
                return "floor"

        reader = Reader()
        fds = IReactorFDSet(reactor)
        fds.addReader(reader)
        timer.arm(time.monotonic_ns() + 10_000_000, 1_000_000_000 // RATE)
        stop = lambda: fds.removeReader(reader)  # noqa: E731
    elif kind == "loopingcall":
        loop = LoopingCall.withCount(lambda count: ticks.__setitem__(0, ticks[0] + count))
        reactor.callWhenRunning(loop.start, 1 / RATE)
        stop = loop.stop
    else:
        clock = MasterClock(Fraction(RATE), lambda first, count: ticks.__setitem__(0, first + count),
                            best_clock(reactor))
        reactor.callWhenRunning(clock.start)
        stop = clock.stop
    marks: list[tuple[float, int]] = []

    def mark() -> None:
        marks.append((_cpu(), ticks[0]))
        if len(marks) == 2:
            stop()
            reactor.stop()

    reactor.callLater(1.0, mark)
    reactor.callLater(1.0 + seconds, mark)
    reactor.run()
    (cpu0, ticks0), (cpu1, ticks1) = marks
    results.put((100 * (cpu1 - cpu0) / seconds, 1e6 * (cpu1 - cpu0) / max(ticks1 - ticks0, 1)))


def measure_twisted(kind: str, seconds: float) -> tuple[float, float]:
    """(CPU %, us per tick) of one of ``TWISTED_FLOORS`` at 1 kHz."""
    results: Any = multiprocessing.Queue()
    process = multiprocessing.Process(target=_twisted_floor, args=(kind, seconds, results))
    process.start()
    cpu_percent, per_tick = results.get(timeout=seconds + 30)
    process.join(10)
    return cpu_percent, per_tick


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[0, 1, 10, 50])
    parser.add_argument("--multicast", type=int, nargs="*", default=[1, 200], help="receivers of W4's group")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    print("bare sender, 1 kHz, 64 ch x blocksize 1, loopback")
    print(f"{'transport':>10} {'clients':>7} {'CPU %':>6} {'us/tick':>8}")
    runs = [(count, False) for count in args.clients] + [(count, True) for count in args.multicast]
    for clients, multicast in runs:
        cpu, per_tick = measure(clients, args.seconds, multicast)
        print(f"{'multicast' if multicast else 'TCP':>10} {clients:7d} {cpu:6.1f} {per_tick:8.1f}")
    for kind, what in TWISTED_FLOORS.items():
        cpu, per_tick = measure_twisted(kind, args.seconds)
        print(f"{'none':>10} {0:7d} {cpu:6.1f} {per_tick:8.1f}   ({what})")


if __name__ == "__main__":
    main()
