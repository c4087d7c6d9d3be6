"""The ``tia`` command line: one argparse subcommand per task, each with its own ``--help``.

Only the parser: each subcommand's ``run(args)`` is in its own module
(:mod:`tia.cli.info`, ...), set as ``args.handler``.
"""

from __future__ import annotations

import argparse
import math
import textwrap

from tia.cli import convert as convert_command
from tia.cli import event as event_command
from tia.cli import info as info_command
from tia.cli import lsl as lsl_command
from tia.cli import monitor as monitor_command
from tia.cli import ping as ping_command
from tia.cli import record as record_command
from tia.cli import recording as recording_command
from tia.cli.common import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_TIMEOUT, Address, parse_address
from tia.client.events import DEFAULT_EVENTS_PORT
from tia.protocol.packet import SAMPLE_ORDERS
from tia.recording.bids import BIDS_DATA_FORMATS

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
        rate, labelled with its EDF+ type ('EEG Fp1', 'EOG HEOG', 'MISC bp1';
        MNE: read_raw_edf(FILE, infer_types=True)), physical range from the
        data, units uV for eeg/emg/eog/ecg, events as annotations
        '<label>=<value>'.

--bids ROOT instead of -o writes the next run of subject --subject and task
--task into the BIDS-EEG dataset ROOT (created if new), with mne-bids (pip
install 'txtia[bids]'): the BDF (or --format edf), channels.tsv (types EEG,
EOG, ECG, EMG, MISC; units), events.tsv (onset on the packet grid, channel
label as trial_type, code as value), eeg.json, dataset_description.json,
participants.tsv and scans.tsv. Nothing is ever overwritten.

Missing packets (gaps in the connection packet numbers) are reported on
stderr and never filled in: NaN in .npz and .csv; in EDF/BDF, which cannot
store NaN, the physical minimum, covered by a 'BAD_ACQ_SKIP' annotation.
"""


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
    """``--tls``, ``--tls-ca``, ``--tls-cert``, ``--tls-key``, ``--tls-server-name``, for ``tls_settings``."""
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


def _add_sample_order_argument(parser: argparse.ArgumentParser) -> None:
    """``--sample-order`` (``args.sample_order``), for the subcommands that read data packets."""
    parser.add_argument(
        "--sample-order",
        choices=SAMPLE_ORDERS,
        default=SAMPLE_ORDERS[0],
        help="how the server lays out each signal's samples in a packet: channel-major (libtia, txtia's"
        " default) or sample-major (a txtia server with [server] sample_order = sample-major, for"
        " eegdev clients); default %(default)s",
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
    """``-o/--output FILE`` or ``--bids ROOT`` with its entities, and ``-f/--force``: see
    :func:`~tia.cli.common.output_path` and :func:`~tia.cli.common.bids_run`."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "-o", "--output", metavar="FILE",
        help="output file; its suffix (.npz, .csv, .edf, .bdf) picks the format",
    )
    where.add_argument(
        "--bids", metavar="ROOT",
        help="write (or extend) the BIDS-EEG dataset in ROOT instead: one new run, with --subject and --task"
        " (needs mne-bids: pip install 'txtia[bids]')",
    )
    parser.add_argument("-f", "--force", action="store_true", help="overwrite FILE (never anything of --bids)")
    bids = parser.add_argument_group("BIDS (with --bids)")
    bids.add_argument("--subject", metavar="ID", help="the BIDS subject label (letters and digits)")
    bids.add_argument("--task", metavar="NAME", help="the BIDS task label (letters and digits), e.g. rest")
    bids.add_argument("--session", metavar="S", help="the BIDS session label (default: none)")
    bids.add_argument(
        "--run", type=_count, metavar="N",
        help="the run number (default: one more than the highest of this subject, session and task);"
        " an existing run is refused",
    )
    bids.add_argument(
        "--format", choices=BIDS_DATA_FORMATS, default=None, dest="bids_format",
        help="the data file: bdf (24 bit, default) or edf (16 bit)",
    )
    bids.add_argument(
        "--line-freq", type=_positive, metavar="HZ",
        help="the power line frequency (PowerLineFrequency), e.g. 50 or 60 (default: n/a)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree: one subcommand per task, each with its own --help."""
    common = argparse.ArgumentParser(add_help=False)
    _add_server_argument(common)
    _add_timeout_argument(common, "a reply or on data")

    parser = argparse.ArgumentParser(
        prog="tia",
        description="Inspect, monitor, record and ping a TOBI Interface A (TiA 1.0) server; post events"
        " to it, control its own recording, convert its raw recordings, bridge it to LSL.",
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
    info.set_defaults(handler=info_command.run)

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
    _add_sample_order_argument(monitor)
    monitor.set_defaults(handler=monitor_command.run)

    record = commands.add_parser(
        "record",
        parents=[common],
        help="record the stream to .npz, .csv, .edf or .bdf, or into a BIDS dataset",
        description=textwrap.fill(
            "Record the stream to FILE (or a BIDS run), for --seconds or until stopped, showing a progress bar"
            " on a terminal. --seconds counts packets (seconds x packet rate), so the file"
            " covers exactly that long. Ctrl-C, SIGTERM (timeout, kill, systemd) and SIGHUP"
            " (a closed terminal) all stop the recording and write what was received.",
            78,
        ),
        epilog=RECORD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_output_arguments(record)
    record.add_argument(
        "--seconds", type=_positive, help="how long to record (default: until Ctrl-C, SIGTERM or SIGHUP)"
    )
    record.add_argument("-q", "--quiet", action="store_true", help="no progress bar or start line on stderr")
    _add_sample_order_argument(record)
    record.set_defaults(handler=record_command.run)

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
    ping.set_defaults(handler=ping_command.run)

    event = commands.add_parser(
        "event",
        help="post an event code to the server's [events] endpoint",
        description="Post CODE (or one value per channel) to a server's injected-events endpoint"
        " ([events] endpoint in its config); it goes out as an aperiodic packet in the next tick."
        " Prints what was posted where; exit 1 if the server refuses it.",
    )
    event.add_argument(
        "values", nargs="+", type=event_command.event_value, metavar="CODE", help="event code or value(s)"
    )
    event.add_argument(
        "--host", type=event_command.events_address, default=Address(DEFAULT_HOST, DEFAULT_EVENTS_PORT),
        metavar="HOST[:PORT]", help=f"events endpoint (default {DEFAULT_HOST}:{DEFAULT_EVENTS_PORT})",
    )
    event.add_argument(
        "--signal", metavar="TARGET",
        help="signal type (event, button, keycode, ...) or source name (default: the event source)",
    )
    _add_timeout_argument(event, "the reply")
    event.set_defaults(handler=event_command.run)

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
    recording.set_defaults(handler=recording_command.run)

    convert = commands.add_parser(
        "convert",
        help="write a server recording's raw journal (NAME.tia) as .edf, .bdf, .npz or .csv, or a BIDS run",
        description="Read the raw journal a txtia server records (NAME.tia with its NAME.json) and write"
        " it in the format the suffix of FILE names, or as the next run of a BIDS dataset (--bids), as"
        " 'tia record' does. After a crash the journal holds everything up to its last flush; a packet"
        " cut short at its end is ignored.",
    )
    convert.add_argument("raw", metavar="RAW", help="NAME.tia, NAME.json or NAME")
    _add_output_arguments(convert)
    convert.set_defaults(handler=convert_command.run)

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
    _add_sample_order_argument(lsl)
    lsl.set_defaults(handler=lsl_command.run)
    return parser
