"""A demo LSL stream for etc/examples/lsl.ini: 8 channels of 10 Hz sine at 250 Hz.

    python etc/examples/lsl_outlet.py [--seconds N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pylsl

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--seconds", type=float, default=0, help="stop after N seconds (default: run until Ctrl-C)")
args = parser.parse_args()
rate, channels, chunk = 250, 8, 10
info = pylsl.StreamInfo("txtia-demo", "EEG", channels, rate, "float32", "txtia-demo-outlet")
outlet = pylsl.StreamOutlet(info)
start, sent = time.monotonic(), 0
try:
    while not args.seconds or time.monotonic() - start < args.seconds:
        due = int((time.monotonic() - start) * rate)
        while sent + chunk <= due:
            k = np.arange(sent, sent + chunk)
            block = 20 * np.sin(2 * np.pi * 10 * k / rate)[:, None] * np.arange(1, channels + 1)
            outlet.push_chunk(block.astype(np.float32))
            sent += chunk
        time.sleep(chunk / rate / 2)
except KeyboardInterrupt:
    pass
