"""``tia event``: post an event code to a txtia server's ``[events]`` endpoint."""

from __future__ import annotations

import argparse
import math
import sys

from tia.cli.common import EXIT_OK, Address, CLIError, parse_address
from tia.client.errors import TiAError
from tia.client.events import DEFAULT_EVENTS_PORT, post_event

# Appended to a failed connection: the endpoint is off unless the server's config turns it on.
ENDPOINT_HINT = "is [events] endpoint set in the server's config?"


def events_address(text: str) -> Address:
    """HOST[:PORT] of an [events] endpoint; the port defaults to 9100, not 9000."""
    address = parse_address(text)
    bare_ipv6 = text.count(":") > 1 and not text.strip().startswith("[")
    has_port = not bare_ipv6 and ":" in text.strip().rsplit("]", 1)[-1]
    return address if has_port else Address(address.host, DEFAULT_EVENTS_PORT)


def event_value(text: str) -> str:
    """An event code or value: any finite number, passed on as written."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return text


def run(args: argparse.Namespace) -> int:
    """Post one event code (or one value per channel); it goes out in the server's next packet."""
    address: Address = args.host
    line = " ".join([*([args.signal] if args.signal else []), *args.values])
    try:
        reply = post_event(address.host, address.port, line, timeout=args.timeout)
    except TiAError as error:
        message = str(error)
        raise CLIError(f"{message}; {ENDPOINT_HINT}" if message.startswith("cannot connect") else message) from None
    if reply != "OK":
        raise CLIError(f"{address} refused {line!r}: {reply.removeprefix('ERROR ')}")
    sys.stdout.write(f"posted {line!r} to {address}\n")
    return EXIT_OK
