"""The start-up warning about UDP packets larger than the network's MTU.

A UDP data packet larger than the path MTU leaves as several IP fragments;
the receiver can use it only when every fragment arrives, so on a lossy link
(Wi-Fi) the packet loss is the fragment loss times the number of fragments,
and a firewall that drops fragments drops every packet. On loopback (MTU
65536) nothing is fragmented, so the problem shows only on the lab network:
hence one warning at start-up, naming the packet size and the MTU.

Where the datagrams go is known for broadcast and multicast (the kernel's
route to the address gives the MTU); unicast clients are known only when
they ask, so the smallest MTU of this host's interfaces that are up stands in
for theirs. Linux only (``IP_MTU`` and ``/sys/class/net``); elsewhere there is
no warning.
"""

from __future__ import annotations

import math
import socket
import sys
from pathlib import Path
from typing import NamedTuple

from twisted.logger import Logger

from tia.config import UDPConfig

log = Logger()

IP_MTU = getattr(socket, "IP_MTU", 14)  # Linux's number: the path MTU of a connected socket's route
IPV4_UDP_HEADERS = 28  # 20 bytes of IPv4 header and 8 of UDP header in every unfragmented datagram
SYS_CLASS_NET = Path("/sys/class/net")


class PathMTU(NamedTuple):
    mtu: int
    where: str  # "the route to 239.1.1.1", "interface eth0"


def route_mtu(address: str, interface: str | None = None) -> PathMTU | None:
    """The MTU of the route to ``address`` (multicast: out of ``interface``), or None if unknown."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            if interface:
                probe.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
            probe.connect((address, 9))  # no datagram is sent: this only looks the route up
            mtu = int(probe.getsockopt(socket.IPPROTO_IP, IP_MTU))
    except OSError:
        return None
    return PathMTU(mtu, f"the route to {address}")


def smallest_interface_mtu(root: Path = SYS_CLASS_NET) -> PathMTU | None:
    """The smallest MTU among this host's interfaces that are up, loopback excepted."""
    found: list[PathMTU] = []
    try:
        interfaces = sorted(root.iterdir())
    except OSError:
        return None
    for interface in interfaces:
        try:
            state = (interface / "operstate").read_text().strip()
            if interface.name == "lo" or state not in ("up", "unknown"):  # unknown: tun, dummy
                continue
            found.append(PathMTU(int((interface / "mtu").read_text()), f"interface {interface.name}"))
        except (OSError, ValueError):
            continue
    return min(found, default=None)


def fragmentation_warning(packet_size: int, path: PathMTU) -> str | None:
    """The warning for datagrams of ``packet_size`` bytes on ``path``, or None when they fit."""
    payload = path.mtu - IPV4_UDP_HEADERS
    if packet_size <= payload:
        return None
    fragments = math.ceil((packet_size + 8) / ((path.mtu - 20) // 8 * 8))
    return (
        f"UDP data packets of up to {packet_size} bytes exceed the {path.mtu}-byte MTU of {path.where} (at most "
        f"{payload} bytes of UDP payload per frame): each leaves as {fragments} IP fragments, and one lost "
        "fragment loses the whole packet; on a lossy network use TCP, fewer channels or smaller blocks"
    )


def warn_if_fragmented(packet_size: int, udp: UDPConfig) -> None:
    """Log ``fragmentation_warning`` once, for the path UDP data takes as far as it is known."""
    if not sys.platform.startswith("linux"):
        return
    if udp.mode in ("broadcast", "multicast") and udp.address is not None:
        path = route_mtu(udp.address, udp.interface)
    else:
        path = smallest_interface_mtu()  # unicast: the clients beyond the narrowest interface
    warning = None if path is None else fragmentation_warning(packet_size, path)
    if warning is not None:
        log.warn("{warning}", warning=warning)
