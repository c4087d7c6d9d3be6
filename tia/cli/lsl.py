"""``tia lsl``: republish a TiA server's signals as Lab Streaming Layer outlets."""

from __future__ import annotations

import argparse

from tia.cli.common import Address, CLIError, sample_order, tls_settings


def run(args: argparse.Namespace) -> int:
    """Until Ctrl-C or ``--seconds``; needs pylsl, so the bridge is imported only here."""
    from tia.lsl.republish import run_client_bridge
    from tia.sources.base import SourceError

    address: Address = args.server
    tls = tls_settings(args)
    try:
        return run_client_bridge(
            address.host, address.port, args.timeout, args.seconds, args.name, args.source_id, tls=tls,
            sample_order=sample_order(args),
        )
    except SourceError as error:
        raise CLIError(str(error)) from None
