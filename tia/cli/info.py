"""``tia info``: the server's metainfo as a table a person can read."""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap

from tia.cli.common import EXIT_OK, Address, metainfo, packet_rate, session
from tia.protocol.channels import physical_unit
from tia.protocol.metainfo import MetaInfo, format_rate


def format_info(address: Address, meta: MetaInfo, width: int = 100) -> str:
    """Subject, master rate, and per signal its rate, block size, channels, unit and labels."""
    subject = meta.subject
    name = " ".join(p for p in (subject.first_name, subject.surname) if p)
    who = subject.id or "(no id)"
    if name:
        who += f" ({name})"
    lines = [
        f"Server:   {address} (TiA 1.0)",
        f"Subject:  {who}",
        f"Master:   {format_rate(meta.master_sampling_rate)} Hz, block size"
        f" {meta.master_block_size}, {packet_rate(meta):g} packets/s",
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
            ", ".join(signal.channel_names),
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


def run(args: argparse.Namespace) -> int:
    """Print the server's metainfo."""
    with session(args) as client:
        meta = metainfo(client)
    width = shutil.get_terminal_size((100, 24)).columns
    sys.stdout.write(format_info(args.server, meta, width))
    return EXIT_OK
