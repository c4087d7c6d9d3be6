"""Fuzzing every parser of wire input, bounded in time, as part of the suite.

hypothesis drives each target of ``fuzz_targets`` with arbitrary bytes and
with mutations of valid inputs; atheris, where installed, runs each target
coverage-guided for a fixed number of inputs in a subprocess (libFuzzer
exits the process it runs in). A target may only raise the error its parser
documents.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz_targets import SEEDS, TARGETS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HERE = Path(__file__).resolve().parent
ATHERIS_RUNS = 20_000


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid input with a few bytes flipped, cut, duplicated or inserted."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "repeat"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(TARGETS))
@FUZZ
@given(data=st.data())
def test_arbitrary_bytes(name: str, data: st.DataObject) -> None:
    TARGETS[name](data.draw(st.binary(max_size=600)))


@pytest.mark.parametrize("name", sorted(TARGETS))
@FUZZ
@given(data=st.data())
def test_mutated_valid_inputs(name: str, data: st.DataObject) -> None:
    TARGETS[name](data.draw(mutated(SEEDS[name])))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_are_valid(name: str) -> None:
    for seed in SEEDS[name]:
        TARGETS[name](seed)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_atheris(name: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(HERE / "fuzz_atheris.py"), name, str(tmp_path / "corpus"), f"-runs={ATHERIS_RUNS}",
         "-seed=1", f"-artifact_prefix={tmp_path}/", "-rss_limit_mb=1024", "-timeout=10"],
        capture_output=True, text=True, timeout=300,
    )
    crashes = [found for kind in ("crash", "timeout", "oom") for found in sorted(tmp_path.glob(f"{kind}-*"))]
    assert result.returncode == 0 and not crashes, (
        f"{name}: {[c.read_bytes()[:200] for c in crashes]}\n{result.stderr[-3000:]}"
    )
    assert f"Done {ATHERIS_RUNS} runs" in result.stderr
