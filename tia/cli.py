"""The ``tia`` command: look at, watch, record and ping a TiA 1.0 server.

A thin layer over the blocking client (:mod:`tia.client.blocking`) and the
recorder (:mod:`tia.recording`): argument parsing, terminal output and exit
codes. Exit codes: 0 success, 1 the server or the connection failed (one line
on stderr, no traceback), 2 usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shutil
import statistics
import sys
import textwrap
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TextIO

import numpy as np

from tia.client.blocking import TiAClient, TiAError, TiAPacket
from tia.client.tls import TLSSettings
from tia.protocol.metainfo import MetaInfo, SignalInfo, format_rate
from tia.protocol.packet import SampleArray
from tia.protocol.signals import flags_in
from tia.recording import (
    Recorder,
    RecordingError,
    channel_names,
    check_writable,
    physical_unit,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9000
DEFAULT_TIMEOUT = 5.0
DEFAULT_EVENTS_PORT = 9100  # tia.sources.injected.DEFAULT_EVENTS_PORT, without importing the sources
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_ASCII = "_.-~=*#@"
# What a TLS failure (an OpenSSL reason in the error text, or the server's own
# refusal of a plain client) means for the --tls options: appended to the error.
TLS_HINTS = (
    ("CERTIFICATE_VERIFY_FAILED", "the server's certificate is not trusted or not for this host:"
     " check --tls-ca and --tls-server-name"),
    ("WRONG_VERSION_NUMBER", "the server does not speak TLS: leave out the --tls options"),
    ("CERTIFICATE_REQUIRED", "the server requires a client certificate: give --tls-cert (and --tls-key)"),
    ("ALERT_UNKNOWN_CA", "the server does not accept this client certificate (--tls-cert):"
     " it must be signed by the server's tls_client_ca"),
    ("ALERT_BAD_CERTIFICATE", "the server does not accept this client certificate (--tls-cert)"),
    ("this server requires TLS", "use --tls-ca FILE (or --tls)"),
)


class CLIError(Exception):
    """A failure shown as one line on stderr; exit code 1."""


class UsageError(CLIError):
    """A command line that cannot be acted on; exit code 2."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str) -> Address:
    """HOST, HOST:PORT, :PORT, [IPv6]:PORT or a bare IPv6 address; the port defaults to 9000."""
    text = text.strip()
    if not text:
        raise argparse.ArgumentTypeError("empty server address")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise argparse.ArgumentTypeError(f"invalid server address {text!r}")
        return Address(host, _parse_port(rest[1:]) if rest else DEFAULT_PORT)
    if text.count(":") > 1:
        return Address(text, DEFAULT_PORT)
    host, colon, port = text.partition(":")
    return Address(host or DEFAULT_HOST, _parse_port(port) if colon else DEFAULT_PORT)


def _parse_port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 0 < int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"invalid port {text!r} (expected 1..65535)")
    return int(text)


def _number(text: str, zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value >= 0 if zero else value > 0) or math.isinf(value):
        kind = "a non-negative" if zero else "a positive"
        raise argparse.ArgumentTypeError(f"{text!r} must be {kind} number")
    return value


def _positive(text: str) -> float:
    return _number(text, zero=False)


def _non_negative(text: str) -> float:
    return _number(text, zero=True)


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


# -- connection helpers ------------------------------------------------------


def _tls_settings(args: argparse.Namespace) -> TLSSettings | None:
    """The ``--tls*`` options as one :class:`TLSSettings`; None (plain TCP) when none is given.

    Every file is read and checked now, so one that cannot be used is a usage
    error naming its option, not a failed connection.
    """
    if not _wants_tls(args):
        return None
    if args.tls_key and not args.tls_cert:
        raise UsageError("argument --tls-key: needs --tls-cert (the certificate of that key)")
    for option, name in (("--tls-ca", args.tls_ca), ("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if name:
            try:
                Path(name).expanduser().open("rb").close()
            except OSError as error:
                raise UsageError(f"argument {option}: cannot read {name}: {error.strerror or error}") from None
    settings = TLSSettings(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    try:
        settings.ssl_context()
    except ValueError as error:  # "TLSSettings.ca: ..." or "TLSSettings.certificate/key: ..."
        field, _, reason = str(error).partition(": ")
        option = "--tls-ca" if field.endswith(".ca") else "--tls-cert/--tls-key"
        raise UsageError(f"argument {option}: {reason}") from None
    return settings


def _wants_tls(args: argparse.Namespace) -> bool:
    """Whether any ``--tls*`` option was given (never, for a subcommand without them)."""
    return any(getattr(args, name, None) for name in ("tls", "tls_ca", "tls_cert", "tls_key", "tls_server_name"))


def _client(args: argparse.Namespace) -> TiAClient:
    """A client (not connected yet) of ``args.server``, over TLS if the ``--tls*`` options say so."""
    address: Address = args.server
    return TiAClient(address.host, address.port, timeout=args.timeout, tls=_tls_settings(args))


def _explain(message: str, args: argparse.Namespace) -> str:
    """An error as shown: without OpenSSL's source location, with a hint when TLS is the cause."""
    message = re.sub(r" \(_ssl\.c:\d+\)", "", message)
    hints = [hint for reason, hint in TLS_HINTS if reason in message]
    if not hints and _wants_tls(args) and not args.tls_cert and "connection lost" in message:
        hints.append("if the server requires a client certificate, give --tls-cert")
    return "; ".join([message, *hints[:1]])


@contextlib.contextmanager
def _session(args: argparse.Namespace) -> Iterator[TiAClient]:
    """A connected client; stops streaming and disconnects on the way out."""
    with _client(args) as client:  # connects, or raises TiAError saying why not
        yield client


def _metainfo(client: TiAClient) -> MetaInfo:
    if not client.cmd_get_metainfo() or client.metainfo is None:
        raise CLIError(f"the server refused GetMetaInfo: {client.last_error}")
    return client.metainfo


def _start_streaming(client: TiAClient, address: Address) -> None:
    ok, port = client.cmd_get_data_connection_tcp()
    if not ok:
        raise CLIError(f"the server refused a TCP data connection: {client.last_error}")
    if not client.start_streaming_data_tcp(address.host, port):
        raise CLIError(f"cannot start the data stream: {client.last_error}")


def _packet_rate(meta: MetaInfo) -> float:
    return meta.master_sampling_rate / meta.master_block_size


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# -- tia info ----------------------------------------------------------------


def format_info(address: Address, meta: MetaInfo, width: int = 100) -> str:
    """The metainfo as a table a person can read."""
    subject = meta.subject
    name = " ".join(p for p in (subject.first_name, subject.surname) if p)
    who = subject.id or "(no id)"
    if name:
        who += f" ({name})"
    lines = [
        f"Server:   {address} (TiA 1.0)",
        f"Subject:  {who}",
        f"Master:   {format_rate(meta.master_sampling_rate)} Hz, block size"
        f" {meta.master_block_size}, {_packet_rate(meta):g} packets/s",
        "",
    ]
    header = ("signal", "kind", "rate (Hz)", "block", "channels", "unit", "labels")
    rows = [
        (
            signal.type.name,
            "aperiodic" if signal.type.aperiodic else "periodic",
            format_rate(signal.sampling_rate),
            str(signal.block_size),
            str(signal.num_channels),
            physical_unit(signal) or "-",
            ", ".join(channel_names(signal)),
        )
        for signal in meta.signals
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    indent = sum(widths) + 2 * len(widths)
    label_width = max(20, width - indent)
    for row in (header, *rows):
        cells = "".join(cell.ljust(w + 2) for cell, w in zip(row, widths, strict=False))
        wrapped = textwrap.wrap(row[-1], label_width, break_on_hyphens=False) or [""]
        lines.append(cells + wrapped[0])
        lines.extend(" " * indent + more for more in wrapped[1:])
    return "\n".join(lines) + "\n"


def cmd_info(args: argparse.Namespace) -> int:
    """Print the server's metainfo."""
    with _session(args) as client:
        meta = _metainfo(client)
    width = shutil.get_terminal_size((100, 24)).columns
    sys.stdout.write(format_info(args.server, meta, width))
    return 0


# -- tia ping ----------------------------------------------------------------


def cmd_ping(args: argparse.Namespace) -> int:
    """Round trips of CheckProtocolVersion: is the server there, and how fast does it answer."""
    address: Address = args.server
    client = _client(args)
    began = time.perf_counter()
    if not client.connect():
        raise CLIError(client.last_error or f"cannot connect to {address}")
    connect_ms = (time.perf_counter() - began) * 1000
    times: list[float] = []
    try:
        for number in range(1, args.count + 1):
            if number > 1:
                time.sleep(args.interval)
            began = time.perf_counter()
            if not client.cmd_check_protocol_version():
                raise CLIError(f"the server refused CheckProtocolVersion: {client.last_error}")
            times.append((time.perf_counter() - began) * 1000)
            if not args.quiet:
                sys.stdout.write(f"reply from {address}: seq={number} time={times[-1]:.3f} ms\n")
                sys.stdout.flush()
    finally:
        client.disconnect()
    sys.stdout.write(
        f"{address}: {len(times)} replies, min {min(times):.3f} ms,"
        f" median {statistics.median(times):.3f} ms, max {max(times):.3f} ms"
        f" (connect {connect_ms:.3f} ms)\n"
    )
    return 0


# -- tia monitor -------------------------------------------------------------


class _SignalStats:
    """Counters of one signal over the current refresh window, plus recent history."""

    def __init__(self, signal: SignalInfo, history: int) -> None:
        self.signal = signal
        self.names = channel_names(signal)
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
        self.period = 1 / _packet_rate(meta)
        self.late_threshold = late
        self.signals = {s.flag: _SignalStats(s, history) for s in meta.signals}
        self.packets = 0
        self.window_packets = 0
        self.gaps = 0
        self.missing = 0
        self.late = 0
        self.unknown = 0
        self._first_id: int | None = None
        self._last_number: int | None = None
        self._base: float | None = None

    def add(self, packet: TiAPacket, arrival: float) -> None:
        self.packets += 1
        self.window_packets += 1
        if self._first_id is None:
            self._first_id = packet.packet_id
        if self._last_number is not None and packet.packet_number > self._last_number + 1:
            self.gaps += 1
            self.missing += packet.packet_number - self._last_number - 1
        self._last_number = packet.packet_number
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
            f"{elapsed:7.1f} s {name:<8} {figures} gaps {stats.gaps} late {stats.late}"
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
        f" ({stats.window_packets / window:.1f}/s)  gaps {stats.gaps}"
        f" ({stats.missing} packets)  late {stats.late}  [Ctrl-C to stop]"
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


def _spark_blocks(stream: TextIO) -> str:
    try:
        SPARK_BLOCKS.encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return SPARK_ASCII
    return SPARK_BLOCKS


def cmd_monitor(args: argparse.Namespace) -> int:
    """Live figures of the stream, refreshed in place on a terminal, as lines otherwise."""
    out = sys.stdout
    tty = _is_tty(out) and not args.plain
    blocks = _spark_blocks(out)
    drawn = 0
    with _session(args) as client:
        meta = _metainfo(client)
        stats = MonitorStats(meta, args.late_ms / 1000)
        _start_streaming(client, args.server)
        start = time.monotonic()
        window_start = start
        deadline = start + args.seconds if args.seconds is not None else math.inf
        refreshes = 0
        if tty:
            out.write("\x1b[?25l")
        try:
            while True:
                now = time.monotonic()
                due = now >= window_start + args.interval
                if now >= deadline or due:
                    window = max(now - window_start, 1e-6)
                    if tty:
                        size = shutil.get_terminal_size((100, 24))
                        # Lines must not wrap, or moving the cursor back up misses some.
                        lines = [
                            line[: max(1, size.columns - 1)]
                            for line in render_screen(
                                stats, args.server, now - start, window, args.channels, blocks
                            )[: max(1, size.lines - 1)]
                        ]
                        prefix = f"\x1b[{drawn}F" if drawn else ""
                        out.write(prefix + "\x1b[J" + "\n".join(lines) + "\n")
                        drawn = len(lines)
                    else:
                        lines = render_plain(stats, now - start, window, args.channels)
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
    return 0


# -- tia record --------------------------------------------------------------


class _Progress:
    """A progress bar on stderr, redrawn at most ten times a second (TTY only)."""

    def __init__(self, stream: TextIO, target: int | None, period: Fraction, enabled: bool) -> None:
        self.stream = stream
        self.target = target
        self.period = period
        self.enabled = enabled
        self._drawn = 0.0
        self._shown = False

    def update(self, recorder: Recorder, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._drawn < 0.1:
            return
        self._drawn = now
        seconds = recorder.duration
        tail = f"{recorder.packets_received} packets  missing {recorder.missing_packets}"
        if self.target:
            total = float(self.target * self.period)
            fraction = min(1.0, recorder.packet_span / self.target)
            filled = round(fraction * 30)
            text = (
                f"\r[{'#' * filled}{'.' * (30 - filled)}] {fraction * 100:3.0f}%"
                f"  {seconds:.1f}/{total:.1f} s  {tail}"
            )
        else:
            text = f"\r{seconds:8.1f} s recorded  {tail}  [Ctrl-C to stop]"
        self.stream.write(text + "\x1b[K")
        self.stream.flush()
        self._shown = True

    def finish(self, recorder: Recorder) -> None:
        if self.enabled and self._shown:
            self.update(recorder, force=True)
            self.stream.write("\n")
            self.stream.flush()


def _output_path(name: str, force: bool) -> Path:
    """The file to write: a format we can write, and not one we would overwrite unasked."""
    output = Path(name)
    try:
        check_writable(output)
    except RecordingError as error:
        raise UsageError(str(error)) from None
    if output.exists() and not force:
        raise UsageError(f"{output} exists; use --force to overwrite it")
    return output


def cmd_record(args: argparse.Namespace) -> int:
    """Record the stream for a while and write it in the format the file suffix names."""
    output = _output_path(args.output, args.force)
    err = sys.stderr
    failure: str | None = None
    with _session(args) as client:
        meta = _metainfo(client)
        recorder = Recorder(meta)
        target = None
        if args.seconds is not None:
            target = max(1, round(args.seconds * _packet_rate(meta)))
        progress = _Progress(
            err, target, recorder.packet_period, _is_tty(err) and not args.quiet
        )
        _start_streaming(client, args.server)
        try:
            while target is None or recorder.packet_span < target:
                batch = client.get_data(timeout=args.timeout)
                if not batch:
                    failure = "the server closed the data connection"
                    break
                for packet in batch:
                    first = recorder.first_packet_id
                    if target is not None and first is not None:
                        if packet.packet_id - first + 1 > target:
                            break
                    for gap in recorder.feed(packet):
                        if progress.enabled:
                            err.write("\r\x1b[K")
                        err.write(f"tia: {gap.describe(recorder.packet_period)}\n")
                progress.update(recorder)
        except KeyboardInterrupt:
            pass
        except TiAError as error:
            failure = str(error)
        progress.finish(recorder)
    if recorder.packets_received == 0:
        raise CLIError(failure or "no packet was recorded")
    files = recorder.write(output)
    summary = (
        f"recorded {recorder.duration:.3f} s from {args.server}: {recorder.packets_received}"
        f" packets, {recorder.missing_packets} missing, {len(recorder.events)} events"
    )
    sys.stdout.write(summary + "\n")
    for path in files:
        sys.stdout.write(f"wrote {path}\n")
    if recorder.missing_packets or recorder.missing_blocks:
        err.write(
            f"tia: warning: {recorder.missing_packets} packets and {recorder.missing_blocks}"
            f" signal blocks were missing ({len(recorder.gaps)} gaps); they are stored as NaN"
            " (EDF/BDF: physical minimum, annotated BAD_ACQ_SKIP), not filled in\n"
        )
    if failure is not None:
        raise CLIError(f"{failure} (kept what was recorded before)")
    return 0


# -- parser ------------------------------------------------------------------

RECORD_EPILOG = """\
formats, chosen by the suffix of FILE:
  .npz  NumPy archive: one float32 array (channels x samples) per periodic
        signal named by its type (e.g. 'eeg'), with '<type>_labels',
        '<type>_rate' and '<type>_unit'; 'events' (structured: sample,
        time_s, packet_id, signal, label, value), 'packet_ids', 'timestamps',
        'gaps', 'master_rate', 'first_packet_id'. Load with numpy.load().
  .csv  FILE holds the signals at the master sampling rate: a header row
        'time_s,<type>:<label>,...' then one row per sample. Each signal at
        another rate goes to its own FILE_<type>.csv (e.g. rec_bp.csv), and
        aperiodic signals to FILE_events.csv.
  .edf  EDF+ (16 bit) / .bdf BDF+ (24 bit), needs edfio (pip install
        'txtia[record]'): one channel per periodic signal channel at its own
        rate, physical range from the data, units uV for eeg/emg/eog/ecg,
        events as annotations '<label>=<value>'.

Missing packets (gaps in the connection packet numbers) are reported on
stderr and never filled in: NaN in .npz and .csv; in EDF/BDF, which cannot
store NaN, the physical minimum, covered by a 'BAD_ACQ_SKIP' annotation.
"""


# -- tia event ---------------------------------------------------------------


def _events_address(text: str) -> Address:
    """HOST[:PORT] of an [events] endpoint; the port defaults to 9100, not 9000."""
    address = parse_address(text)
    bare_ipv6 = text.count(":") > 1 and not text.strip().startswith("[")
    has_port = not bare_ipv6 and ":" in text.strip().rsplit("]", 1)[-1]
    return address if has_port else Address(address.host, DEFAULT_EVENTS_PORT)


def _event_value(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return text


def cmd_event(args: argparse.Namespace) -> int:
    """Post one event code to a server's [events] endpoint; it goes out in the next packet."""
    from tia.server.events import post_event

    address: Address = args.host
    line = " ".join([*([args.signal] if args.signal else []), *args.values])
    try:
        reply = post_event(address.host, address.port, line, timeout=args.timeout)
    except OSError as error:
        raise CLIError(f"cannot post to {address}: {error} (is [events] endpoint set on the server?)") from None
    if reply != "OK":
        raise CLIError(f"{address} refused {line!r}: {reply.removeprefix('ERROR ')}")
    return 0


# -- tia recording / convert / lsl: server-side recording and the LSL bridge --


def cmd_recording(args: argparse.Namespace) -> int:
    """Start, stop or show a txtia server's own recording (its control extension)."""
    from tia.server.recorder import recording_request

    address: Address = args.server
    tls = _tls_settings(args)
    sys.stdout.write(recording_request(address.host, address.port, args.action, args.timeout, args.wait, tls=tls))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Write a server recording's raw journal (NAME.tia) as EDF/BDF/NPZ/CSV, e.g. after a crash."""
    from tia.server.recorder import convert_raw

    output = _output_path(args.output, args.force)
    result = convert_raw(args.raw, [output], overwrite=args.force)
    for note in result.notes:
        sys.stderr.write(f"tia convert: {note}\n")
    recorder = result.recorder
    sys.stdout.write(f"converted {recorder.duration:.3f} s: {recorder.packets_received} packets, "
                     f"{recorder.missing_packets} missing, {len(recorder.events)} events\n")
    for path in result.files:
        sys.stdout.write(f"wrote {path}\n")
    return 0


def cmd_lsl(args: argparse.Namespace) -> int:
    """Republish a TiA server's signals as LSL outlets until Ctrl-C or --seconds."""
    from tia.lsl_bridge import run_client_bridge
    from tia.sources.base import SourceError

    address: Address = args.server
    tls = _tls_settings(args)
    try:
        return run_client_bridge(
            address.host, address.port, args.timeout, args.seconds, args.name, args.source_id, tls=tls
        )
    except SourceError as error:
        raise CLIError(str(error)) from None


def _add_server_argument(parser: argparse.ArgumentParser, kind: str = "TiA") -> None:
    """The optional HOST[:PORT] positional (``args.server``, an :class:`Address`) and the TLS options."""
    parser.add_argument(
        "server",
        nargs="?",
        type=parse_address,
        default=Address(DEFAULT_HOST, DEFAULT_PORT),
        metavar="HOST[:PORT]",
        help=f"{kind} server (default {DEFAULT_HOST}:{DEFAULT_PORT}; the port defaults to"
        f" {DEFAULT_PORT}; IPv6 as [ADDR]:PORT)",
    )
    _add_tls_arguments(parser)


def _add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tls``, ``--tls-ca``, ``--tls-cert``, ``--tls-key``, ``--tls-server-name``, for :func:`_tls_settings`."""
    group = parser.add_argument_group(
        "TLS (a txtia server with tls_certificate; any of these options turns TLS on)"
    )
    group.add_argument(
        "--tls", action="store_true", help="connect over TLS, trusting the system's CA certificates"
    )
    group.add_argument("--tls-ca", metavar="FILE", help="PEM file of the CA(s) that signed the server's certificate")
    group.add_argument(
        "--tls-cert", metavar="FILE", help="this client's PEM certificate, for a server with tls_client_ca"
    )
    group.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (default: the --tls-cert file)")
    group.add_argument(
        "--tls-server-name", metavar="NAME",
        help="the name the server's certificate must carry (default: HOST)",
    )


def _add_timeout_argument(parser: argparse.ArgumentParser, waiting_for: str) -> None:
    """``--timeout SECONDS`` (``args.timeout``): how long to wait for ``waiting_for``."""
    parser.add_argument(
        "--timeout",
        type=_positive,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up on {waiting_for} after this long (default {DEFAULT_TIMEOUT:g})",
    )


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``-o/--output FILE`` and ``-f/--force``, for :func:`_output_path`."""
    parser.add_argument(
        "-o", "--output", required=True, metavar="FILE",
        help="output file; its suffix (.npz, .csv, .edf, .bdf) picks the format",
    )
    parser.add_argument("-f", "--force", action="store_true", help="overwrite FILE")


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree: one subcommand per task, each with its own --help."""
    common = argparse.ArgumentParser(add_help=False)
    _add_server_argument(common)
    _add_timeout_argument(common, "a reply or on data")

    parser = argparse.ArgumentParser(
        prog="tia",
        description="Inspect, monitor, record and ping a TOBI Interface A (TiA 1.0) server.",
        epilog="Run 'tia COMMAND --help' for the options of a command. Exit codes: 0 ok,"
        " 1 server or connection error, 2 usage error.",
    )
    from tia import __version__

    parser.add_argument("--version", action="version", version=f"tia {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    info = commands.add_parser(
        "info",
        parents=[common],
        help="show the server's signals, rates, channels and subject",
        description="Print the server's metainfo as a table: subject, master rate, and per"
        " signal its rate, block size, channel count, assumed unit and labels.",
    )
    info.set_defaults(handler=cmd_info)

    monitor = commands.add_parser(
        "monitor",
        parents=[common],
        help="live packet and sample rates, gaps, late packets, per-channel levels",
        description="Stream data and show, per signal, the measured packet and sample rates,"
        " gaps in the connection packet numbers, late packets and a sparkline (terminal) or"
        " the latest value (plain lines, when stdout is not a terminal) per channel."
        " Runs until Ctrl-C, --seconds or --count.",
    )
    limit = monitor.add_mutually_exclusive_group()
    limit.add_argument("--seconds", type=_positive, help="stop after this many seconds")
    limit.add_argument("--count", type=_count, help="stop after this many refreshes")
    monitor.add_argument(
        "--interval", type=_positive, default=1.0, metavar="SECONDS",
        help="refresh period (default 1)",
    )
    monitor.add_argument(
        "--channels", type=_count, default=8, metavar="N",
        help="channels shown per signal (default 8)",
    )
    monitor.add_argument(
        "--late-ms", type=_positive, default=50.0, metavar="MS",
        help="a packet arriving this much later than its packet id allows is late (default 50)",
    )
    monitor.add_argument(
        "--plain", action="store_true", help="plain lines even on a terminal"
    )
    monitor.set_defaults(handler=cmd_monitor)

    record = commands.add_parser(
        "record",
        parents=[common],
        help="record the stream to .npz, .csv, .edf or .bdf",
        description=textwrap.fill(
            "Record the stream to FILE, for --seconds or until Ctrl-C, showing a progress bar"
            " on a terminal. --seconds counts packets (seconds x packet rate), so the file"
            " covers exactly that long.",
            78,
        ),
        epilog=RECORD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_output_arguments(record)
    record.add_argument(
        "--seconds", type=_positive, help="how long to record (default: until Ctrl-C)"
    )
    record.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    record.set_defaults(handler=cmd_record)

    ping = commands.add_parser(
        "ping",
        parents=[common],
        help="round-trip time of CheckProtocolVersion",
        description="Send CheckProtocolVersion COUNT times on one control connection and"
        " print each round-trip time, then min, median and max in milliseconds.",
    )
    ping.add_argument(
        "-n", "--count", type=_count, default=10, help="requests to send (default 10)"
    )
    ping.add_argument(
        "-i", "--interval", type=_non_negative, default=0.1, metavar="SECONDS",
        help="pause between requests (default 0.1)",
    )
    ping.add_argument("-q", "--quiet", action="store_true", help="only the summary line")
    ping.set_defaults(handler=cmd_ping)

    event = commands.add_parser(
        "event",
        help="post an event code to the server's [events] endpoint",
        description="Post CODE (or one value per channel) to a server's injected-events endpoint"
        " ([events] endpoint in its config); it goes out as an aperiodic packet in the next tick."
        " Exit 1 if the server refuses it.",
    )
    event.add_argument("values", nargs="+", type=_event_value, metavar="CODE", help="event code or value(s)")
    event.add_argument(
        "--host", type=_events_address, default=Address(DEFAULT_HOST, DEFAULT_EVENTS_PORT), metavar="HOST[:PORT]",
        help=f"events endpoint (default {DEFAULT_HOST}:{DEFAULT_EVENTS_PORT})",
    )
    event.add_argument(
        "--signal", metavar="TARGET",
        help="signal type (event, button, keycode, ...) or source name (default: the event source)",
    )
    _add_timeout_argument(event, "the reply")
    event.set_defaults(handler=cmd_event)

    recording = commands.add_parser(
        "recording",
        help="start, stop or show the server's own recording ([recording] of a txtia server)",
        description="Ask a txtia server to start or stop recording what it sends (to the directory, name"
        " pattern and formats of its [recording] section), or show the recording's state. Start waits"
        " until the files are open, stop until they are complete (at most --wait seconds).",
    )
    recording.add_argument("action", choices=("start", "stop", "status"))
    _add_server_argument(recording, "txtia")  # after the action, so not from the common parent
    _add_timeout_argument(recording, "a reply")
    recording.add_argument(
        "--wait", type=_non_negative, default=60.0, metavar="SECONDS",
        help="longest wait for the files to be opened or completed (default 60)",
    )
    recording.set_defaults(handler=cmd_recording)

    convert = commands.add_parser(
        "convert",
        help="write a server recording's raw journal (NAME.tia) as .edf, .bdf, .npz or .csv",
        description="Read the raw journal a txtia server records (NAME.tia with its NAME.json) and write"
        " it in the format the suffix of FILE names, as 'tia record' does. After a crash the journal"
        " holds everything up to its last flush; a packet cut short at its end is ignored.",
    )
    convert.add_argument("raw", metavar="RAW", help="NAME.tia, NAME.json or NAME")
    _add_output_arguments(convert)
    convert.set_defaults(handler=cmd_convert)

    lsl = commands.add_parser(
        "lsl",
        parents=[common],
        help="republish a TiA server's signals as Lab Streaming Layer outlets",
        description="Connect to a TiA server and publish each of its signals as an LSL outlet (NAME-TYPE,"
        " float32, channel labels and units, nominal rate; aperiodic signals irregular), with time"
        " stamps on the server's packet grid anchored at the first packet's arrival. Needs pylsl."
        " Runs until Ctrl-C or --seconds.",
    )
    lsl.add_argument("--seconds", type=_positive, help="stop after this many seconds")
    lsl.add_argument("--name", default="TiA", help="stream name prefix (default TiA: TiA-eeg, ...)")
    lsl.add_argument("--source-id", metavar="ID", help="LSL source_id prefix (default tia-lsl@HOST:PORT)")
    lsl.set_defaults(handler=cmd_lsl)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tia``; returns the exit code (0 ok, 1 server or connection error, 2 usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.command is None:
        parser.print_usage(sys.stderr)
        sys.stderr.write(
            "tia: error: a COMMAND is required (info, monitor, record, ping, event, recording, convert, lsl)\n"
        )
        return 2
    try:
        return int(args.handler(args))
    except UsageError as error:
        sys.stderr.write(f"tia {args.command}: error: {_explain(str(error), args)}\n")
        return 2
    except (CLIError, TiAError, RecordingError) as error:
        sys.stderr.write(f"tia {args.command}: error: {_explain(str(error), args)}\n")
        return 1
    except BrokenPipeError:
        # The reader went away (``tia monitor | head``): stop quietly, and keep
        # the interpreter from complaining when it flushes stdout on exit.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as error:
        sys.stderr.write(f"tia {args.command}: error: {_explain(str(error), args)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("tia: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
