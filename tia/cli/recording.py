"""``tia recording start|stop|status``: a txtia server's own recording (its ``[recording]`` section)."""

from __future__ import annotations

import argparse
import sys

from tia.cli.common import EXIT_OK, Address, tls_settings
from tia.client.recording_control import recording_request


def run(args: argparse.Namespace) -> int:
    """Start, stop or show the recording; start and stop wait (``--wait``) until the files are open or complete."""
    address: Address = args.server
    tls = tls_settings(args)
    sys.stdout.write(recording_request(address.host, address.port, args.action, args.timeout, args.wait, tls=tls))
    return EXIT_OK
