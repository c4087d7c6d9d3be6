"""The network fault report: ``python -m bench.faults [--scenario NAME ...] [--rst]`` (as root).

Runs each scenario of tests/netns_scenarios.py on lab hosts (network
namespaces, veth links, the seeded relay: tests/netns.py), with the daemon
(``twistd -n tia``) in one namespace and its clients in others, and prints
one block per scenario: what the faulty client saw, what the healthy
clients saw (packets, gaps), how long until the fault was noticed, and the
daemon's resources afterwards (fds, TCP connections). ``--rst`` prints the
table for README.rst instead. The figures go to
bench/results/faults-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the lab and its scenarios live with the tests that assert on them

import netns  # noqa: E402
import netns_scenarios  # noqa: E402

COLUMNS = (("scenario", "scenario"), ("victim", "what the victim saw"), ("healthy", "healthy clients"),
           ("detected", "time to detect"), ("after", "resources after"))


def rst_table(outcomes: list[netns_scenarios.Outcome]) -> str:
    lines = [".. list-table::", "   :header-rows: 1", "   :widths: 18 36 16 16 14", ""]
    for row in [[title for _, title in COLUMNS], *[[getattr(o, name) for name, _ in COLUMNS] for o in outcomes]]:
        for column, text in enumerate(row):
            lines.append(f"   {'* -' if column == 0 else '  -'} {text}")
    return "\n".join(lines) + "\n"


def text_block(outcome: netns_scenarios.Outcome) -> str:
    return "\n".join(f"{title:20} {getattr(outcome, name)}" for name, title in COLUMNS) + "\n"


def without_long_lists(value: Any) -> Any:
    """The details minus the per-packet lists (numbers, relay logs), for the JSON file."""
    if isinstance(value, dict):
        return {key: without_long_lists(item) for key, item in value.items() if key not in ("numbers", "written")}
    if isinstance(value, list) and len(value) > 50:
        return f"{len(value)} items"
    if isinstance(value, list):
        return [without_long_lists(item) for item in value]
    return value


def main(argv: list[str] | None = None) -> int:
    names = [scenario.__name__ for scenario in netns_scenarios.SCENARIOS]
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", "-s", action="append", choices=names, help="scenario(s) to run (default: all)")
    parser.add_argument("--rst", action="store_true", help="print the table for README.rst")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="JSON results folder")
    args = parser.parse_args(argv)
    reason = netns.unavailable() or netns.relay_unavailable()
    if reason is not None:
        sys.stderr.write(f"python -m bench.faults: error: {reason}\n")
        return 1
    outcomes = []
    for scenario in netns_scenarios.SCENARIOS:
        if args.scenario and scenario.__name__ not in args.scenario:
            continue
        sys.stderr.write(f"running {scenario.__name__} ...\n")
        with tempfile.TemporaryDirectory() as directory, netns.Lab(Path(directory)) as lab:
            started = time.monotonic()
            outcome = scenario(lab)
            outcome.details["seconds"] = time.monotonic() - started
        outcomes.append(outcome)
        if not args.rst:
            sys.stdout.write(text_block(outcome) + "\n")
    if args.rst:
        sys.stdout.write(rst_table(outcomes))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"faults-{time.strftime('%Y%m%d-%H%M%S')}.json"
    machine = {"cpus": os.cpu_count(), "load": os.getloadavg(), "python": sys.version.split()[0]}
    path.write_text(json.dumps(
        {"machine": machine, "outcomes": [without_long_lists(asdict(outcome)) for outcome in outcomes]}, indent=2,
    ))
    sys.stderr.write(f"saved {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
