"""Synthetic sources: the precomputed period table gives the same values as the formula."""

from __future__ import annotations

import numpy as np
import pytest

from tia.config import sources_from_signal_options
from tia.sources import build_source
from tia.sources.synthetic import WAVES, SyntheticSource, _period


@pytest.mark.parametrize("signal", ["eeg:64:1000:1:sine", "eeg:8:2048:8:sine", "emg:4:512:16:square",
                                    "eeg:3:1000:7:ramp", "eeg:2:1000:3:noise"])
def test_table_matches_the_formula(signal: str) -> None:
    spec = sources_from_signal_options([signal])[0]
    source = build_source(spec)
    assert isinstance(source, SyntheticSource)
    assert (source._table is not None) == (spec.driver != "noise")
    if spec.driver == "noise":
        return
    wave = WAVES[spec.driver](spec)
    for tick in (0, 1, 7, 99, 12_345, 10**7 + 3):
        direct = wave(tick * spec.block_size + np.arange(spec.block_size)).astype(np.float32)
        block = source.read(tick)
        assert block is not None
        np.testing.assert_allclose(block, direct, atol=2e-5)


def test_period_of_mixed_frequencies_and_no_table_for_irrational_ones() -> None:
    spec = sources_from_signal_options(["eeg:2:512:16:sine"])[0]
    assert _period(spec) == 256  # 10 Hz at 512 Hz: 5/256 cycles per sample
    from dataclasses import replace

    assert _period(replace(spec, options={"frequency": [10.0, 0.5]})) == 1024
    assert _period(replace(spec, options={"frequency": [3.14159265358979]})) is None
