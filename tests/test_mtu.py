"""The start-up warning about UDP packets larger than the network's MTU (tia.server.mtu).

What fragmentation does on a real 1500-byte link is measured in tests/test_netns_mtu.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support import LogCapture, ramp_config

from tia.daemon import build_service
from tia.server import mtu
from tia.server.mtu import PathMTU, fragmentation_warning, route_mtu, smallest_interface_mtu

# 256 channels x blocksize 8: 33 + 4 + 256 * 8 * 4 bytes
BIG_PACKET = 8229


def test_the_warning_names_both_numbers_and_the_fragments() -> None:
    warning = fragmentation_warning(BIG_PACKET, PathMTU(1500, "interface eth0"))
    assert warning is not None
    assert "8229 bytes exceed the 1500-byte MTU of interface eth0" in warning
    assert "6 IP fragments" in warning
    assert fragmentation_warning(1472, PathMTU(1500, "x")) is None  # 1472 + 8 UDP + 20 IP = 1500
    assert "2 IP fragments" in (fragmentation_warning(1473, PathMTU(1500, "x")) or "")


def test_the_narrowest_interface_that_is_up(tmp_path: Path) -> None:
    for name, mtu_value, state in (
        ("lo", 65536, "unknown"), ("eth0", 1500, "up"), ("wlan0", 1280, "down"), ("tun0", 1400, "unknown"),
        ("broken", "x", "up"),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "mtu").write_text(f"{mtu_value}\n")
        (tmp_path / name / "operstate").write_text(f"{state}\n")
    assert smallest_interface_mtu(tmp_path) == PathMTU(1400, "interface tun0")
    assert smallest_interface_mtu(tmp_path / "missing") is None


@pytest.mark.skipif(sys.platform != "linux", reason="IP_MTU is Linux's")
def test_the_route_mtu_of_loopback() -> None:
    loopback = route_mtu("127.0.0.1")
    assert loopback is not None and loopback.mtu > 16_000 and loopback.where == "the route to 127.0.0.1"
    assert route_mtu("not an address") is None


@pytest.mark.parametrize(("channels", "warnings"), [(256, 1), (4, 0)])
def test_logged_once_at_start_up(monkeypatch: pytest.MonkeyPatch, channels: int, warnings: int) -> None:
    monkeypatch.setattr(mtu, "smallest_interface_mtu", lambda: PathMTU(1500, "interface eth0"))
    service = build_service(ramp_config(rate=2048, blocksize=8, channels=channels))
    with LogCapture() as log:
        try:
            service.startService()
        finally:
            service.stopService()
    found = [line for _, line in log.lines if "MTU" in line]
    assert len(found) == warnings, found
    if warnings:
        assert "8229 bytes exceed the 1500-byte MTU of interface eth0" in found[0]
