"""``tia convert``: a server recording's raw journal (NAME.tia) as .edf, .bdf, .npz or .csv, or as a run of a
BIDS-EEG dataset (``--bids``), e.g. after a crash."""

from __future__ import annotations

import argparse
import sys

from tia.cli.common import EXIT_OK, bids_run, output_path
from tia.recording.journal import convert_raw


def run(args: argparse.Namespace) -> int:
    """Write the journal in the format the suffix of ``-o FILE`` names, as ``tia record`` does (or as the
    next run of the BIDS dataset ``--bids`` names)."""
    bids = bids_run(args)
    outputs = [] if bids is not None else [output_path(args.output, args.force)]
    result = convert_raw(args.raw, outputs, overwrite=args.force, bids=bids)
    for note in result.notes:
        sys.stderr.write(f"tia convert: {note}\n")
    recorder = result.recorder
    sys.stdout.write(f"converted {recorder.duration:.3f} s: {recorder.packets_received} packets, "
                     f"{recorder.missing_packets} missing, {len(recorder.events)} events\n")
    for path in result.files:
        sys.stdout.write(f"wrote {path}\n")
    return EXIT_OK
