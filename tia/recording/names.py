"""File names of a server's recording runs: the ``[recording] pattern`` and its run numbers.

A run never overwrites another: its number is one more than the highest of
the same pattern, day and subject found on disk, and a name any of whose
files exists is skipped.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Sequence
from pathlib import Path

from tia.recording.journal import CONVERTING_SUFFIX, RAW_SUFFIX, SIDECAR_SUFFIX

__all__ = ["first_free_run", "format_name"]

_RUN = "\x00run\x00"


class _RunMarker:
    """Formats as a marker whatever the format spec, to find where the run number goes."""

    def __format__(self, spec: str) -> str:
        return _RUN


def _safe(text: str) -> str:
    """A file-name-safe version of a subject id: letters, digits, ``.``, ``_`` and ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")


def format_name(pattern: str, when: datetime.datetime, subject: str, run: object) -> str:
    """The stem of a run's files (relative to the recording directory)."""
    return pattern.format(
        date=when.strftime("%Y%m%d"), time=when.strftime("%H%M%S"), subject=_safe(subject) or "nosubject", run=run,
    )


def _output_suffixes(formats: Sequence[str]) -> list[str]:
    return [RAW_SUFFIX, SIDECAR_SUFFIX, CONVERTING_SUFFIX] + [f".{f}" for f in formats if f not in ("raw", "bids")]


def first_free_run(directory: Path, pattern: str, when: datetime.datetime, subject: str,
                   formats: Sequence[str]) -> int:
    """One more than the highest run of this pattern (date, subject) already on disk, at least 1."""
    marked = format_name(pattern, when, subject, _RunMarker())
    head, _, tail = marked.rpartition("/")
    parent = directory / head if head else directory
    highest = 0
    if _RUN in tail and _RUN not in head:
        pieces = [re.escape(piece) for piece in tail.split(_RUN)]
        matcher = re.compile(r"(\d+)".join(pieces) + r"(?:[._]|$)")
        try:
            names = os.listdir(parent)
        except FileNotFoundError:
            names = []
        for name in names:
            match = matcher.match(name)
            if match:
                highest = max(highest, *(int(group) for group in match.groups()))
    run = highest + 1
    while any(directory.joinpath(format_name(pattern, when, subject, run) + suffix).exists()
              for suffix in _output_suffixes(formats)):
        run += 1
    return run
