"""The ``tia`` command: look at, watch, record and ping a TiA 1.0 server, and use txtia's extensions.

A thin layer over the blocking client (:mod:`tia.client`) and the recording
writers (:mod:`tia.recording`): argument parsing (:mod:`tia.cli.parser`),
terminal output and exit codes, one module per subcommand; what they share
is in :mod:`tia.cli.common`. It never loads the server: ``tia convert`` reads
journals with :mod:`tia.recording.journal`, ``tia lsl`` republishes with
:mod:`tia.lsl.republish`.

Exit codes: 0 success, 1 the server or the connection failed (one line on
stderr, ``tia COMMAND: error: ...``, no traceback), 2 usage error.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

from tia.cli.common import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CLIError, UsageError, explain
from tia.client.errors import TiAError
from tia.recording.recorder import RecordingError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tia``; returns the exit code (0 ok, 1 server or connection error, 2 usage)."""
    from tia.cli.parser import build_parser

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_usage(sys.stderr)
        sys.stderr.write(
            "tia: error: a COMMAND is required (info, monitor, record, ping, event, recording, convert, lsl)\n"
        )
        return EXIT_USAGE
    try:
        return int(args.handler(args))
    except UsageError as error:
        sys.stderr.write(f"tia {args.command}: error: {explain(str(error), args)}\n")
        return EXIT_USAGE
    except (CLIError, TiAError, RecordingError) as error:
        sys.stderr.write(f"tia {args.command}: error: {explain(str(error), args)}\n")
        return EXIT_FAILURE
    except BrokenPipeError:
        # The reader went away (``tia monitor | head``): stop quietly, and keep
        # the interpreter from complaining when it flushes stdout on exit.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except OSError as error:
        sys.stderr.write(f"tia {args.command}: error: {explain(str(error), args)}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        sys.stderr.write("tia: interrupted\n")
        return EXIT_INTERRUPTED
