"""``tia ping``: is the server there, and how fast does it answer (CheckProtocolVersion round trips)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from tia.cli.common import EXIT_OK, Address, CLIError, connect, new_client


def run(args: argparse.Namespace) -> int:
    """Round trips of CheckProtocolVersion on one control connection, then min, median and max."""
    address: Address = args.server
    client = new_client(args)
    began = time.perf_counter()
    connect(client)
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
    return EXIT_OK
