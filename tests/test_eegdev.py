"""EPFL's eegdev library (its ``tobiia`` TiA client plugin) against the real daemon.

eegdev reads each signal's block sample by sample (s1: ch1..chN, s2: ...),
where libtia and txtia by default send it channel by channel (SPEC section
4). ``[server] sample_order = sample-major`` is for eegdev: this test proves
it with the library itself. ``tests/eegdev_reader.c``, compiled here with gcc
against ``libeegdev`` (Debian: libeegdev-dev, eegdev-plugins-free), opens
``tobiia|host|127.0.0.1|port|N``, reads a few hundred samples of a daemon
serving two ramp signals (eeg 3 channels, bp 2 channels, which eegdev calls
``undefined``) and prints them; every value is checked exactly. Channel-major
at block size 1 is the same bytes, so eegdev reads it right; channel-major at
block size 10 is read as the exact transposition checked below, which is why
the option exists. Skips, naming what is missing, without gcc or eegdev.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
from collections.abc import Generator
from pathlib import Path

import numpy as np
import pytest
from support import start_daemon

READER_SOURCE = Path(__file__).with_name("eegdev_reader.c")
SAMPLES = 300
RATE = 1000
SIGNALS = (("eeg", 3), ("bp", 2))  # wire order; eegdev hands out eeg, then the rest as "undefined"
CONFIG = """\
[server]
control = tcp:0:interface=127.0.0.1
sample_order = {order}
{sources}"""
SOURCE = """
[source:{kind}]
driver = ramp
rate = {rate}
blocksize = {blocksize}
channels = {channels}
type = {kind}
"""


def missing_requirements() -> str | None:
    """Why the eegdev test cannot run here, or None."""
    if shutil.which("gcc") is None:
        return "gcc is not installed"
    if not Path("/usr/include/eegdev.h").exists():
        return "eegdev's header /usr/include/eegdev.h is missing (Debian: apt-get install libeegdev-dev)"
    if not glob.glob("/usr/lib/*/eegdev/tobiia.so") + glob.glob("/usr/lib*/eegdev/tobiia.so"):
        return "eegdev's tobiia plugin is missing (Debian: apt-get install eegdev-plugins-free)"
    return None


MISSING = missing_requirements()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/eegdev_reader.c, compiled against libeegdev."""
    binary = tmp_path_factory.mktemp("eegdev") / "eegdev_reader"
    build = subprocess.run(
        ["gcc", "-std=c99", "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Wextra", "-o", str(binary),
         str(READER_SOURCE), "-leegdev"],
        capture_output=True, text=True, timeout=120,
    )
    assert build.returncode == 0, f"cannot build {READER_SOURCE.name}:\n{build.stderr}"
    return binary


def serve(order: str, blocksize: int, workdir: Path) -> Generator[str, None, None]:
    """The daemon on a free port serving SIGNALS as ramps; yields 'host:port'."""
    sources = "".join(
        SOURCE.format(kind=kind, rate=RATE, blocksize=blocksize, channels=channels) for kind, channels in SIGNALS
    )
    config = workdir / "eegdev.ini"
    config.write_text(CONFIG.format(order=order, sources=sources), encoding="utf-8")
    yield from start_daemon(["--config", str(config)], workdir)


def read_through_eegdev(reader: Path, address: str) -> np.ndarray:
    """SAMPLES samples x 5 channels (eeg1..3, bp1..2) as eegdev hands them to an application."""
    host, port = address.rsplit(":", 1)
    done = subprocess.run(
        [str(reader), f"tobiia|host|{host}|port|{port}", str(SAMPLES)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, f"eegdev failed: {done.stderr.strip()}"
    header, *rows = done.stdout.splitlines()
    assert header == f"rate {RATE} eeg 3 undefined 2"
    samples = np.array([[float(value) for value in row.split()] for row in rows], dtype=np.float32)
    assert samples.shape == (SAMPLES, 5)
    return samples


def ramp(first_sample: int, channels: int) -> np.ndarray:
    """The ramp as sent: (samples, channels), channel c (1-based), sample k -> c * 1000 + k % 1000."""
    k = np.arange(first_sample, first_sample + SAMPLES)
    return np.stack([c * 1000 + k % 1000 for c in range(1, channels + 1)], axis=1).astype(np.float32)


def expected_reading(first_sample: int, blocksize: int, wire: str) -> np.ndarray:
    """What eegdev reads, sample by sample, when the server sends the ramp in ``wire`` order.

    Sample-major: the ramp itself. Channel-major: each (channels, blocksize)
    block flattened channel by channel, then cut sample by sample, as eegdev
    does; the same as the ramp only when blocksize is 1.
    """
    columns = []
    for _, channels in SIGNALS:
        sent = ramp(first_sample, channels)  # samples x channels
        if wire == "channel-major":
            packets = sent.reshape(-1, blocksize, channels).transpose(0, 2, 1)  # each block as (channels, samples)
            sent = packets.reshape(-1, channels)  # its bytes, read sample by sample
        columns.append(sent)
    return np.concatenate(columns, axis=1)


@pytest.mark.parametrize(
    ("order", "blocksize"),
    [("sample-major", 1), ("sample-major", 10), ("channel-major", 1), ("channel-major", 10)],
    ids=lambda value: str(value),
)
def test_eegdev_reads_the_daemon(reader: Path, tmp_path: Path, order: str, blocksize: int) -> None:
    daemon = serve(order, blocksize, tmp_path)
    try:
        samples = read_through_eegdev(reader, next(daemon))
    finally:
        daemon.close()
    first_sample = int(samples[0, 0]) - 1000  # eeg1 of the first sample is 1000 + k % 1000
    assert first_sample % blocksize == 0  # eegdev starts at a packet: block boundaries line up
    reading = expected_reading(first_sample, blocksize, order)
    np.testing.assert_array_equal(samples, reading)  # every value, exactly
    exact = np.array_equal(samples, np.concatenate([ramp(first_sample, n) for _, n in SIGNALS], axis=1))
    assert exact == (order == "sample-major" or blocksize == 1)
