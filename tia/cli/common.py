"""What the ``tia`` subcommands share: addresses, errors and exit codes, TLS options, the client session.

Every failure is one line on stderr, ``tia COMMAND: error: <message>``; a
server that cannot be reached is ``cannot connect to HOST:PORT: <reason>``
for every subcommand, as the clients word it (:mod:`tia.client.sockets`).
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from tia.client.blocking import TiAClient
from tia.client.sockets import host_port
from tia.client.tls import TLSSettings
from tia.protocol.metainfo import MetaInfo
from tia.protocol.packet import SAMPLE_ORDERS
from tia.recording.bids import BIDSRun, bids_label, check_run_free, missing_bids
from tia.recording.recorder import RecordingError
from tia.recording.writers import check_writable

EXIT_OK = 0
EXIT_FAILURE = 1
"""The server or the connection failed (or refused); one line on stderr."""
EXIT_USAGE = 2
"""A command line that cannot be acted on; one line on stderr."""
EXIT_INTERRUPTED = 130
"""Ctrl-C where a subcommand has nothing to save."""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9000
DEFAULT_TIMEOUT = 5.0

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


# -- addresses -----------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return host_port(self.host, self.port)


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


# -- TLS options and errors ------------------------------------------------------


def tls_settings(args: argparse.Namespace) -> TLSSettings | None:
    """The ``--tls*`` options as one :class:`TLSSettings`; None (plain TCP) when none is given.

    Every file is read and checked now, so one that cannot be used is a usage
    error naming its option, not a failed connection.
    """
    if not wants_tls(args):
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


def wants_tls(args: argparse.Namespace) -> bool:
    """Whether any ``--tls*`` option was given (never, for a subcommand without them)."""
    return any(getattr(args, name, None) for name in ("tls", "tls_ca", "tls_cert", "tls_key", "tls_server_name"))


def explain(message: str, args: argparse.Namespace) -> str:
    """An error as shown: without OpenSSL's source location, with a hint when TLS is the cause."""
    message = re.sub(r" \(_ssl\.c:\d+\)", "", message)
    hints = [hint for reason, hint in TLS_HINTS if reason in message]
    if not hints and wants_tls(args) and not args.tls_cert and "connection lost" in message:
        hints.append("if the server requires a client certificate, give --tls-cert")
    return "; ".join([message, *hints[:1]])


# -- the client session ------------------------------------------------------------


def new_client(args: argparse.Namespace) -> TiAClient:
    """A client (not connected yet) of ``args.server``, over TLS if the ``--tls*`` options say so,
    reading packets in the ``--sample-order`` of the subcommands that read data."""
    address: Address = args.server
    return TiAClient(
        address.host, address.port, timeout=args.timeout, tls=tls_settings(args), sample_order=sample_order(args)
    )


def sample_order(args: argparse.Namespace) -> str:
    """``--sample-order``, or the default for a subcommand without it (one that reads no data)."""
    order: str = getattr(args, "sample_order", SAMPLE_ORDERS[0])
    return order


def connect(client: TiAClient) -> None:
    """Open the control connection, or raise ``cannot connect to HOST:PORT: <reason>``."""
    if not client.connect():
        raise CLIError(client.last_error or f"cannot connect to {host_port(*client.address)}")


@contextlib.contextmanager
def session(args: argparse.Namespace) -> Iterator[TiAClient]:
    """A connected client; stops streaming and disconnects on the way out."""
    with new_client(args) as client:  # connects, or raises TiAError("cannot connect to HOST:PORT: ...")
        yield client


def metainfo(client: TiAClient) -> MetaInfo:
    if not client.cmd_get_metainfo() or client.metainfo is None:
        raise CLIError(f"the server refused GetMetaInfo: {client.last_error}")
    return client.metainfo


def start_streaming(client: TiAClient, address: Address) -> None:
    ok, port = client.cmd_get_data_connection_tcp()
    if not ok:
        raise CLIError(f"the server refused a TCP data connection: {client.last_error}")
    if not client.start_streaming_data_tcp(address.host, port):
        raise CLIError(f"cannot start the data stream: {client.last_error}")


def packet_rate(meta: MetaInfo) -> float:
    return meta.master_sampling_rate / meta.master_block_size


def is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def output_path(name: str, force: bool) -> Path:
    """The file to write: a format we can write, and not one we would overwrite unasked."""
    output = Path(name)
    try:
        check_writable(output)
    except RecordingError as error:
        raise UsageError(str(error)) from None
    if output.exists() and not force:
        raise UsageError(f"{output} exists; use --force to overwrite it")
    return output


BIDS_OPTIONS = {"--subject": "subject", "--task": "task", "--session": "session", "--run": "run",
                "--format": "bids_format", "--line-freq": "line_freq"}


def bids_run(args: argparse.Namespace) -> BIDSRun | None:
    """The BIDS run ``--bids ROOT`` and its options name (None without ``--bids``), checked before
    anything is recorded or read: mne-bids installed, labels, a given run not taken."""
    given = {option: getattr(args, name) for option, name in BIDS_OPTIONS.items()}
    if args.bids is None:
        extra = [option for option, value in given.items() if value is not None]
        if extra:
            raise UsageError(f"{extra[0]} goes with --bids ROOT")
        return None
    if args.force:
        raise UsageError("--force does not go with --bids: nothing in a BIDS dataset is ever overwritten")
    missing = missing_bids()
    if missing is not None:
        raise UsageError(missing)
    for option, entity in (("--subject", "subject"), ("--task", "task"), ("--session", "session")):
        if given[option] is None and entity != "session":
            raise UsageError(f"--bids needs {option}")
        if given[option] is not None:
            try:
                bids_label(given[option], entity)
            except RecordingError as error:
                raise UsageError(f"{option}: {error}") from None
    root = Path(args.bids)
    if root.exists() and not root.is_dir():
        raise UsageError(f"--bids: {root} is not a directory")
    target = BIDSRun(root, args.subject, args.task, args.session, args.run, args.bids_format or "bdf", args.line_freq)
    try:
        check_run_free(target)
    except RecordingError as error:
        raise UsageError(f"--run: {error}") from None
    return target
