"""TiA signals as Lab Streaming Layer outlets: :class:`LSLPublisher`, shared by the server and ``tia lsl``.

:class:`LSLPublisher` owns one outlet per TiA signal (name ``NAME-TYPE``,
LSL content type, float32 channels with their labels and units in the
description, the signal's nominal rate; aperiodic signals get irregular
outlets) and pushes decoded packets as whole chunks.

Time stamps. TiA packet ids count the server's ticks, which run on a fixed
grid (``packet id / packet rate`` seconds after the server started). A
:class:`ClockAnchor` ties that grid once, at the first packet, to LSL's
``local_clock()``: packet ``p`` is stamped ``anchor + (p - p0) / packet
rate``, and sample ``j`` of its block ``1 / rate`` later per sample, so the
stamps are exactly regular and follow the tick grid. Where the anchor comes
from is each side's business: the server's outlets
(:mod:`tia.lsl.outlets`) take the monotonic time at which the hub sent the
first tick, ``tia lsl`` (:mod:`tia.lsl.republish`) the first packet's arrival.

This module needs neither the server nor the client: pylsl is passed in
(``tia.sources.lsl.import_pylsl`` loads it with a one-line error).
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from typing import Any

import numpy as np

from tia.protocol.channels import physical_unit
from tia.protocol.metainfo import MetaInfo, SignalInfo
from tia.protocol.packet import SampleArray

__all__ = ["ClockAnchor", "LSLPublisher", "lsl_type"]

# LSL content types (the XDF meta-data conventions) of the TiA types that have one.
_LSL_TYPES = {
    "eeg": "EEG", "emg": "EMG", "eog": "EOG", "ecg": "ECG", "nirs": "NIRS", "fmri": "fMRI",
    "hr": "HeartRate", "bp": "BloodPressure", "event": "Markers", "button": "Markers",
    "keycode": "Markers", "mouse-button": "Markers", "axis": "Axis",
}
_LSL_UNITS = {"uV": "microvolts"}


def lsl_type(signal: SignalInfo) -> str:
    """The LSL content type of a TiA signal (``EEG``, ``Markers``, ...); its TiA name where none fits."""
    return _LSL_TYPES.get(signal.type.name, signal.type.name)


class ClockAnchor:
    """LSL time of packet ids: fixed at the first packet, then on the tick grid."""

    def __init__(self, packet_rate: Fraction) -> None:
        self.packet_rate = packet_rate
        self.first_id: int | None = None
        self.anchor = 0.0

    def set(self, packet_id: int, lsl_time: float) -> None:
        self.first_id, self.anchor = packet_id, lsl_time

    def __call__(self, packet_id: int) -> float:
        assert self.first_id is not None
        return self.anchor + float(Fraction(packet_id - self.first_id) / self.packet_rate)


class LSLPublisher:
    """One LSL outlet per signal of ``metainfo``; ``push`` sends a packet's blocks."""

    def __init__(self, pylsl: Any, metainfo: MetaInfo, name: str, source_id: str) -> None:
        self.pylsl = pylsl
        self.metainfo = metainfo
        self.outlets: dict[int, Any] = {}
        self.signals: dict[int, SignalInfo] = {s.flag: s for s in metainfo.signals}
        self.names = {s.flag: f"{name}-{s.type.name}" for s in metainfo.signals}
        for signal in metainfo.signals:
            self.outlets[signal.flag] = pylsl.StreamOutlet(
                self._info(signal, source_id), chunk_size=0 if signal.type.aperiodic else signal.block_size
            )

    def _info(self, signal: SignalInfo, source_id: str) -> Any:
        pylsl = self.pylsl
        kind = lsl_type(signal)
        info = pylsl.StreamInfo(
            self.names[signal.flag], kind, signal.num_channels,
            0.0 if signal.type.aperiodic else float(signal.sampling_rate),
            pylsl.cf_float32, f"{source_id}/{signal.type.name}",
        )
        description = info.desc()
        unit = physical_unit(signal)
        channels = description.append_child("channels")
        for label in signal.channel_names:
            channel = channels.append_child("channel")
            channel.append_child_value("label", label)
            channel.append_child_value("unit", _LSL_UNITS.get(unit, unit))
            channel.append_child_value("type", kind)
        description.append_child_value("manufacturer", "txtia (TOBI Interface A bridge)")
        description.append_child_value("tia_type", signal.type.name)
        if self.metainfo.subject.id:
            description.append_child("subject").append_child_value("id", self.metainfo.subject.id)
        return info

    def push(self, blocks: Iterable[tuple[int, SampleArray]], packet_time: float) -> None:
        """Push one packet's blocks ((flag, channels x samples) pairs); ``packet_time`` is the LSL
        time of its first sample."""
        for flag, block in blocks:
            outlet = self.outlets.get(flag)
            signal = self.signals.get(flag)
            if outlet is None or signal is None:
                continue
            if signal.type.aperiodic:
                for column in range(block.shape[1]):  # irregular: each value at its packet's time
                    outlet.push_sample(np.ascontiguousarray(block[:, column]), packet_time)
            else:
                last = packet_time + (block.shape[1] - 1) / signal.sampling_rate
                outlet.push_chunk(np.ascontiguousarray(block.T), last)

    def describe(self) -> list[str]:
        return [
            f"{self.names[s.flag]} ({lsl_type(s)}, {s.num_channels} ch, "
            f"{'irregular' if s.type.aperiodic else f'{s.sampling_rate:g} Hz'})"
            for s in self.metainfo.signals
        ]

    def close(self) -> None:
        """Drop the outlets (liblsl destroys them with their last reference)."""
        self.outlets.clear()
