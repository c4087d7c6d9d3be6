"""``tia monitor``: live packet and sample rates, gaps, late packets and per-channel levels.

Refreshed in place on a terminal (a sparkline per channel), as plain lines
otherwise (for logs and pipes). Runs until Ctrl-C, ``--seconds`` or ``--count``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np

from tia.cli.common import EXIT_OK, Address, CLIError, is_tty, metainfo, packet_rate, session, start_streaming
from tia.client.packet import TiAPacket
from tia.client.sequence import PacketSequence
from tia.protocol.channels import physical_unit
from tia.protocol.metainfo import MetaInfo, SignalInfo, format_rate
from tia.protocol.packet import SampleArray
from tia.protocol.signals import flags_in

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_ASCII = "_.-~=*#@"


class _SignalStats:
    """Counters of one signal over the current refresh window, plus recent history."""

    def __init__(self, signal: SignalInfo, history: int) -> None:
        self.signal = signal
        self.names = signal.channel_names
        self.packets = 0
        self.samples = 0
        self.events = 0
        self.history: list[deque[float]] = [deque(maxlen=history) for _ in self.names]
        self.last: list[float] = [math.nan] * len(self.names)

    def add(self, block: SampleArray) -> None:
        self.packets += 1
        self.samples += int(block.shape[1])
        if self.signal.type.aperiodic:
            self.events += int(block.shape[0] * block.shape[1])
        for channel in range(min(block.shape[0], len(self.names))):
            row = block[channel]
            self.last[channel] = float(row[-1])
            self.history[channel].append(float(np.mean(row)))

    def reset_window(self) -> None:
        self.packets = self.samples = self.events = 0


class MonitorStats:
    """Live figures of a stream: per-signal rates, gaps and late packets.

    A packet is late when it arrives more than ``late`` seconds after the
    earliest arrival its packet id allows (packet ids tick at the packet
    rate; the best offset seen so far is the reference), so no assumption
    about the server's timestamp unit is needed.
    """

    def __init__(self, meta: MetaInfo, late: float, history: int = 32) -> None:
        self.meta = meta
        self.period = 1 / packet_rate(meta)
        self.late_threshold = late
        self.signals = {s.flag: _SignalStats(s, history) for s in meta.signals}
        self.packets = 0
        self.window_packets = 0
        self.sequence = PacketSequence()  # gaps and lost packets, from the connection packet numbers
        self.late = 0
        self.unknown = 0
        self._first_id: int | None = None
        self._base: float | None = None

    def add(self, packet: TiAPacket, arrival: float) -> None:
        self.packets += 1
        self.window_packets += 1
        if self._first_id is None:
            self._first_id = packet.packet_id
        self.sequence.check(packet.packet_number)
        lateness = arrival - (packet.packet_id - self._first_id) * self.period
        if self._base is None or lateness < self._base:
            self._base = lateness
        elif lateness - self._base > self.late_threshold:
            self.late += 1
        for flag, block in zip(flags_in(packet.flags), packet.arrays, strict=False):
            stats = self.signals.get(flag)
            if stats is None:
                self.unknown += 1
            else:
                stats.add(block)

    def reset_window(self) -> None:
        self.window_packets = 0
        for stats in self.signals.values():
            stats.reset_window()


def sparkline(values: Sequence[float], blocks: str = SPARK_BLOCKS) -> str:
    """Values as a row of bar characters scaled to their own range."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return " " * len(values)
    low, high = min(finite), max(finite)
    top = len(blocks) - 1
    chars = []
    for value in values:
        if not math.isfinite(value):
            chars.append(" ")
        elif high == low:
            chars.append(blocks[top // 2])
        else:
            chars.append(blocks[round((value - low) / (high - low) * top)])
    return "".join(chars)


def _value(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6g}"


def render_plain(stats: MonitorStats, elapsed: float, window: float, channels: int) -> list[str]:
    """One line per signal: for logs and pipes."""
    lines = []
    for item in stats.signals.values():
        signal = item.signal
        name = signal.type.name
        if signal.type.aperiodic:
            figures = f"{item.events / window:7.1f} events/s"
        else:
            figures = (
                f"{item.packets / window:7.1f} pkt/s {item.samples / window:9.1f} Hz"
                f" (of {format_rate(signal.sampling_rate)})"
            )
        levels = " ".join(
            f"{label}={_value(value)}"
            for label, value in list(zip(item.names, item.last, strict=True))[:channels]
        )
        more = f" +{len(item.names) - channels} more" if len(item.names) > channels else ""
        lines.append(
            f"{elapsed:7.1f} s {name:<8} {figures} gaps {stats.sequence.gaps} late {stats.late}"
            f" | {levels}{more}"
        )
    return lines


def render_screen(
    stats: MonitorStats,
    address: Address,
    elapsed: float,
    window: float,
    channels: int,
    blocks: str,
) -> list[str]:
    """The full-screen view: header, per-signal rates, a sparkline per channel."""
    lines = [
        f"tia monitor {address}  {elapsed:6.1f} s  {stats.packets} packets"
        f" ({stats.window_packets / window:.1f}/s)  gaps {stats.sequence.gaps}"
        f" ({stats.sequence.lost} packets)  late {stats.late}  [Ctrl-C to stop]"
    ]
    for item in stats.signals.values():
        signal = item.signal
        if signal.type.aperiodic:
            lines.append(f"{signal.type.name:<8} {item.events / window:7.1f} events/s")
        else:
            lines.append(
                f"{signal.type.name:<8} {item.packets / window:7.1f} pkt/s"
                f" {item.samples / window:9.1f} Hz (of {format_rate(signal.sampling_rate)})"
                f" {physical_unit(signal)}"
            )
        width = max(len(n) for n in item.names[:channels])
        for label, history, last in list(
            zip(item.names, item.history, item.last, strict=True)
        )[:channels]:
            lines.append(
                f"  {label:<{width}} {sparkline(list(history), blocks):<{history.maxlen}}"
                f" {_value(last):>12}"
            )
        if len(item.names) > channels:
            lines.append(f"  ... {len(item.names) - channels} more channels (--channels)")
    return lines


def render_sources(status: dict[str, Any] | None) -> list[str]:
    """One line per source of a txtia server (``GetServerStatus``): its state, and for a device
    fed at its own pace, the blocks it missed, the samples its buffer dropped and its rate error."""
    if not status:
        return []
    lines = []
    for source in status.get("sources", []):
        figures = [str(source.get("state", "?"))]
        if source.get("missed_blocks"):
            figures.append(f"{source['missed_blocks']} blocks late")
        if source.get("overflow_samples"):
            figures.append(f"{source['overflow_samples']} samples dropped")
        if source.get("rate_error_ppm") is not None:
            figures.append(f"rate {source['rate_error_ppm']:+.0f} ppm")
        lines.append(f"source {source.get('name', '?')} ({source.get('driver', '?')}): {', '.join(figures)}")
    return lines


def _spark_blocks(stream: TextIO) -> str:
    try:
        SPARK_BLOCKS.encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return SPARK_ASCII
    return SPARK_BLOCKS


def run(args: argparse.Namespace) -> int:
    """Live figures of the stream, refreshed in place on a terminal, as lines otherwise."""
    out = sys.stdout
    tty = is_tty(out) and not args.plain
    blocks = _spark_blocks(out)
    drawn = 0
    with session(args) as client:
        meta = metainfo(client)
        stats = MonitorStats(meta, args.late_ms / 1000)
        start_streaming(client, args.server)
        start = time.monotonic()
        window_start = start
        deadline = start + args.seconds if args.seconds is not None else math.inf
        refreshes = 0
        asks_status = True  # until a server without GetServerStatus (not txtia) says so
        if tty:
            out.write("\x1b[?25l")
        try:
            while True:
                now = time.monotonic()
                due = now >= window_start + args.interval
                if now >= deadline or due:
                    window = max(now - window_start, 1e-6)
                    status = client.server_status() if asks_status else None
                    asks_status = status is not None
                    sources = render_sources(status)
                    if tty:
                        size = shutil.get_terminal_size((100, 24))
                        # Lines must not wrap, or moving the cursor back up misses some.
                        lines = [
                            line[: max(1, size.columns - 1)]
                            for line in (render_screen(
                                stats, args.server, now - start, window, args.channels, blocks
                            ) + sources)[: max(1, size.lines - 1)]
                        ]
                        prefix = f"\x1b[{drawn}F" if drawn else ""
                        out.write(prefix + "\x1b[J" + "\n".join(lines) + "\n")
                        drawn = len(lines)
                    else:
                        lines = render_plain(stats, now - start, window, args.channels)
                        lines += [f"{now - start:7.1f} s {line}" for line in sources]
                        out.write("\n".join(lines) + "\n")
                    out.flush()
                    stats.reset_window()
                    window_start = now
                    refreshes += 1
                    if now >= deadline or (args.count is not None and refreshes >= args.count):
                        break
                batch = client.get_data(timeout=args.timeout)
                if not batch:
                    raise CLIError("the server closed the data connection")
                arrival = time.monotonic()
                for packet in batch:
                    stats.add(packet, arrival)
        except KeyboardInterrupt:
            pass
        finally:
            if tty:
                out.write("\x1b[?25h")
                out.flush()
    return EXIT_OK
