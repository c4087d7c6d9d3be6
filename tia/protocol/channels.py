"""In which unit a signal's values are taken, for files, outlets and people.

TiA's metainfo carries no units at all. Every place that presents a signal
to people or to other tools (the recording's EDF/BDF/NPZ/CSV files and
sidecar, the LSL outlets, ``tia info``, ``tia monitor``) states the same
unit, from here; its channels are named by ``SignalInfo.channel_names``.
"""

from __future__ import annotations

from tia.protocol.metainfo import SignalInfo

__all__ = ["physical_unit"]

# What amplifiers behind TiA servers send, by signal type; TiA itself carries no units.
_UNITS = {
    "eeg": "uV",
    "emg": "uV",
    "eog": "uV",
    "ecg": "uV",
    "hr": "bpm",
    "bp": "mmHg",
}


def physical_unit(signal: SignalInfo) -> str:
    """The unit we assume for a signal type; empty when TiA gives no hint."""
    return _UNITS.get(signal.type.name, "")
