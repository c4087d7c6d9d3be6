"""How a signal's channels are named and in which unit their values are taken, for files and outlets.

TiA's metainfo may leave channel labels empty and carries no units at all.
Every place that presents a signal to people or to other tools (the
recording's EDF/BDF/NPZ/CSV files and sidecar, the LSL outlets, ``tia info``,
``tia monitor``) names and labels channels the same way, with these two
functions.
"""

from __future__ import annotations

from tia.protocol.metainfo import SignalInfo

__all__ = ["channel_names", "physical_unit"]

# What amplifiers behind TiA servers send, by signal type; TiA itself carries no units.
_UNITS = {
    "eeg": "uV",
    "emg": "uV",
    "eog": "uV",
    "ecg": "uV",
    "hr": "bpm",
    "bp": "mmHg",
}


def channel_names(signal: SignalInfo) -> list[str]:
    """The channels' labels, unlabelled ones named after the type (``eeg3``)."""
    return [
        label if label else f"{signal.type.name}{number}"
        for number, label in enumerate(signal.labels, start=1)
    ]


def physical_unit(signal: SignalInfo) -> str:
    """The unit we assume for a signal type; empty when TiA gives no hint."""
    return _UNITS.get(signal.type.name, "")
