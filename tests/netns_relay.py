"""A lossy cable between two network namespaces: a userspace IP relay over two TUN devices.

Run by ``tests/netns.py`` (``Lab.relay_link``) as its own process::

    python tests/netns_relay.py LEFT_NS RIGHT_NS '{"seed": 1, "loss": 0.02, "delay": 0.02, "jitter": 0.02}'

It creates a TUN device ``relay0`` in each namespace, prints ``ready``, and
from then on carries every IP packet from one to the other, dropping each with
probability ``loss``, sending it twice with probability ``duplicate``, and
holding it ``delay`` + uniform(0, ``jitter``) seconds. Packets whose hold time
differs overtake one another: the jitter is the reordering. All randomness
comes from ``seed`` (one generator per direction), the way ``tc netem``
would do it in a kernel that has it (this one has not).

It accounts for the TiA UDP data it carries (right to left, the server's
side being ``RIGHT_NS``): per destination port, the connection packet
numbers written, in order, and those dropped. A line ``report`` on stdin
prints them as one JSON line; end of stdin (the test is gone) ends the relay
and with it both TUN devices, which is a cable pulled out.
"""

from __future__ import annotations

import ctypes
import fcntl
import heapq
import json
import os
import random
import selectors
import struct
import sys
import time
from collections import defaultdict
from typing import Any

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
DEVICE = "relay0"

_libc = ctypes.CDLL(None, use_errno=True)


def enter_namespace(path: str) -> None:
    """This thread's network namespace becomes ``path``'s (what ``ip netns exec`` does)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns {path}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def open_tun(namespace: str) -> int:
    """A TUN device named ``relay0`` in ``namespace`` (a name under /run/netns); its file descriptor."""
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        enter_namespace(f"/run/netns/{namespace}")
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", DEVICE.encode(), IFF_TUN | IFF_NO_PI))
    finally:
        _libc.setns(own, CLONE_NEWNET)
        os.close(own)
    return fd


def tia_udp_number(packet: bytes) -> tuple[int, int] | None:
    """(destination port, connection packet number) of an IPv4 datagram carrying a TiA packet's start."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 17:
        return None
    if struct.unpack_from("!H", packet, 6)[0] & 0x1FFF:  # a later fragment: no UDP header in it
        return None
    start = (packet[0] & 0x0F) * 4
    if len(packet) < start + 8 + 25 or packet[start + 8] != 3:
        return None
    port = struct.unpack_from("!H", packet, start + 2)[0]
    return port, struct.unpack_from("<Q", packet, start + 8 + 17)[0]


class Direction:
    """One way through the cable, with its own random generator and hold queue."""

    def __init__(self, source: int, target: int, seed: int, settings: dict[str, float], account: bool) -> None:
        self.source, self.target = source, target
        self.random = random.Random(seed)
        self.loss = settings.get("loss", 0.0)
        self.duplicate = settings.get("duplicate", 0.0)
        self.delay = settings.get("delay", 0.0)
        self.jitter = settings.get("jitter", 0.0)
        self.account = account
        self.queue: list[tuple[float, int, bytes]] = []
        self.count = 0
        self.carried = self.dropped = self.fragments = 0
        self.written: defaultdict[int, list[int]] = defaultdict(list)  # port -> numbers, in order
        self.lost: defaultdict[int, list[int]] = defaultdict(list)

    def receive(self, packet: bytes, now: float) -> None:
        if len(packet) >= 20 and struct.unpack_from("!H", packet, 6)[0] & 0x3FFF:  # more fragments, or an offset
            self.fragments += 1
        flow = tia_udp_number(packet) if self.account else None
        if self.random.random() < self.loss:
            self.dropped += 1
            if flow is not None:
                self.lost[flow[0]].append(flow[1])
            return
        copies = 2 if self.random.random() < self.duplicate else 1
        for _ in range(copies):
            hold = self.delay + self.random.uniform(0.0, self.jitter)
            self.count += 1
            heapq.heappush(self.queue, (now + hold, self.count, packet))

    def release(self, now: float) -> float | None:
        """Write what is due; the time the next packet is due, if any."""
        while self.queue and self.queue[0][0] <= now:
            _, _, packet = heapq.heappop(self.queue)
            try:
                os.write(self.target, packet)
            except OSError:
                continue  # the device is down (a link pulled on purpose): the packet is lost
            self.carried += 1
            flow = tia_udp_number(packet) if self.account else None
            if flow is not None:
                self.written[flow[0]].append(flow[1])
        return self.queue[0][0] if self.queue else None

    def report(self) -> dict[str, Any]:
        return {
            "carried": self.carried, "dropped": self.dropped, "fragments": self.fragments,
            "udp": {str(port): {"written": numbers, "dropped": self.lost.get(port, [])}
                    for port, numbers in self.written.items()},
        }


def main() -> None:
    left_ns, right_ns, settings_text = sys.argv[1:4]
    settings: dict[str, Any] = json.loads(settings_text)
    seed = int(settings.get("seed", 0))
    left, right = open_tun(left_ns), open_tun(right_ns)
    to_left = Direction(right, left, seed * 2, settings, account=True)
    to_right = Direction(left, right, seed * 2 + 1, settings, account=False)
    by_source = {right: to_left, left: to_right}
    selector = selectors.DefaultSelector()
    for fd in (left, right):
        selector.register(fd, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ, "commands")
    print("ready", flush=True)
    next_due: float | None = None
    while True:
        timeout = None if next_due is None else max(0.0, next_due - time.monotonic())
        for key, _ in selector.select(timeout):
            if key.data == "commands":
                line = sys.stdin.readline()
                if not line:
                    return
                if line.strip() == "report":
                    print(json.dumps({"to_left": to_left.report(), "to_right": to_right.report()}), flush=True)
                continue
            fd = key.fd
            direction = by_source[fd]
            now = time.monotonic()
            for _ in range(64):  # what is there now, without starving the other direction
                try:
                    direction.receive(os.read(fd, 65536), now)
                except OSError:  # nothing more now, or the device went down with its namespace
                    break
        now = time.monotonic()
        dues = [due for due in (to_left.release(now), to_right.release(now)) if due is not None]
        next_due = min(dues, default=None)


if __name__ == "__main__":
    main()
