"""Write the small data files the example configs replay (deterministic; run from anywhere).

    python etc/examples/make_example_data.py

example.edf: EDF+, 4 EEG channels and 1 ECG at 256 Hz, 10 s, annotations
"left" / "right" / "rest" every 2 s. example.csv: 2 EEG channels and 1 EMG at
128 Hz, 10 s, a header row of label:type.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from edfio import Edf, EdfAnnotation, EdfSignal

HERE = Path(__file__).resolve().parent / "data"
SECONDS = 10


def make_edf(path: Path) -> None:
    rate = 256
    t = np.arange(SECONDS * rate) / rate
    noise = np.random.default_rng(1)
    signals = [
        EdfSignal(20 * np.sin(2 * np.pi * (8 + i) * t) + 5 * noise.standard_normal(t.size), rate,
                  label=f"EEG {name}", physical_dimension="uV", physical_range=(-200, 200))
        for i, name in enumerate(("Fp1", "Fp2", "C3", "C4"))
    ]
    beat = np.exp(-((t % 0.8) - 0.1) ** 2 / 0.0005)  # one "R wave" every 0.8 s
    signals.append(EdfSignal(1000 * beat - 100, rate, label="ECG", physical_dimension="uV",
                             physical_range=(-2000, 2000)))
    texts = ("left", "right", "rest")
    annotations = [EdfAnnotation(float(onset), None, texts[n % 3]) for n, onset in enumerate(range(1, SECONDS, 2))]
    Edf(signals, annotations=annotations, data_record_duration=1).write(path)


def make_csv(path: Path) -> None:
    rate = 128
    t = np.arange(SECONDS * rate) / rate
    table = np.column_stack([
        30 * np.sin(2 * np.pi * 10 * t),
        30 * np.cos(2 * np.pi * 10 * t),
        50 * np.sin(2 * np.pi * 60 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0),
    ])
    np.savetxt(path, table, fmt="%.4f", delimiter=",", header="C3:eeg,C4:eeg,chin:emg", comments="")


if __name__ == "__main__":
    HERE.mkdir(exist_ok=True)
    make_edf(HERE / "example.edf")
    make_csv(HERE / "example.csv")
