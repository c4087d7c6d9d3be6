"""BrainFlow boards (``driver = brainflow``): any ``BoardShim`` board id, parameters from config.

The board's rows become channels: its EXG rows as ``exg`` (eeg, emg, ecg,
eog or off), its accelerometer and gyroscope rows as ``accel`` / ``gyro``
(sensor or off). The rate is the board's (``BoardShim.get_sampling_rate``),
read from BrainFlow's board descriptions at config time, offline. The board
is opened and streamed in a background thread through the device buffer
(``tia.sources.device``); a board that cannot be opened or stops delivering
is a source failure naming the section, and ``on_error`` applies.

The synthetic board (``board_id = -1`` or ``SYNTHETIC_BOARD``) needs no
hardware.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from zope.interface import implementer

from tia.protocol.signals import SignalType, by_name
from tia.sources.base import ChannelSpec, ISource, OptionError, SourceDescription, SourceError, SourceSpec
from tia.sources.device import DeviceSource

POLL_SECONDS = 0.02
RING_SECONDS = 60
EXG_TYPES = ("eeg", "emg", "ecg", "eog", "off")
SENSOR_TYPES = ("sensor", "off")
# BrainFlowInputParams fields settable from config, and their types
PARAMS: dict[str, type] = {
    "serial_port": str, "mac_address": str, "ip_address": str, "ip_address_aux": str,
    "ip_address_anc": str, "ip_port": int, "ip_port_aux": int, "ip_port_anc": int,
    "ip_protocol": int, "other_info": str, "timeout": int, "serial_number": str,
    "file": str, "file_aux": str, "file_anc": str, "master_board": int,
}


def import_brainflow() -> Any:
    try:
        import brainflow.board_shim as board_shim  # type: ignore[import-untyped]
    except ImportError as error:
        raise SourceError(f"the brainflow driver needs brainflow: pip install 'txtia[sources]' ({error})") from None
    except OSError as error:
        raise SourceError(f"brainflow cannot load its library: {error}") from None
    return board_shim


def parse_board_id(text: str) -> int:
    """A number (-1) or a ``BoardIds`` name (SYNTHETIC_BOARD, CYTON_BOARD, ...)."""
    value = text.strip()
    try:
        return int(value)
    except ValueError:
        pass
    board_ids = import_brainflow().BoardIds
    try:
        return int(board_ids[value.upper()].value)
    except KeyError:
        raise ValueError("not a board id number nor a BoardIds name such as SYNTHETIC_BOARD") from None


def _choice(choices: tuple[str, ...]) -> Any:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


parse_exg = _choice(EXG_TYPES)
parse_sensor = _choice(SENSOR_TYPES)


@dataclass(frozen=True)
class BoardLayout:
    rate: Fraction
    rows: tuple[int, ...]
    channels: tuple[ChannelSpec, ...]


def _rows(board_shim: Any, getter: str, board_id: int) -> list[int]:
    try:
        return [int(row) for row in getattr(board_shim.BoardShim, getter)(board_id)]
    except board_shim.BrainFlowError:
        return []  # the board has no such rows


def board_layout(options: Mapping[str, object]) -> BoardLayout:
    """Which rows of the board's data become which channels, from BrainFlow's descriptions."""
    board_shim = import_brainflow()
    board_id = int(options.get("board_id", -1))  # type: ignore[call-overload]
    try:
        rate = Fraction(board_shim.BoardShim.get_sampling_rate(board_id))
        description = board_shim.BoardShim.get_board_descr(board_id)
    except board_shim.BrainFlowError as error:
        raise OptionError("board_id", f"BrainFlow knows no board {board_id}: {error}") from None
    rows: list[int] = []
    channels: list[ChannelSpec] = []
    exg = str(options.get("exg", "eeg"))
    if exg != "off":
        kind = by_name(exg)
        exg_rows = _rows(board_shim, "get_exg_channels", board_id)
        names = str(description.get("eeg_names") or "").split(",") if isinstance(description, dict) else []
        for number, row in enumerate(exg_rows, start=1):
            label = names[number - 1].strip() if len(names) == len(exg_rows) and names[number - 1].strip() else (
                f"{kind.name}{number}")
            rows.append(row)
            channels.append(ChannelSpec(label, kind))
    sensor: SignalType = by_name("sensor")
    for key, getter in (("accel", "get_accel_channels"), ("gyro", "get_gyro_channels")):
        if str(options.get(key, "sensor")) == "off":
            continue
        for axis, row in zip("xyz", _rows(board_shim, getter, board_id), strict=False):
            rows.append(row)
            channels.append(ChannelSpec(f"{key}_{axis}", sensor))
    if not rows:
        raise OptionError("exg", f"board {board_id} gives no rows with exg, accel and gyro as configured")
    return BoardLayout(rate, tuple(rows), tuple(channels))


def describe(
    options: Mapping[str, object], channels: tuple[ChannelSpec, ...] | None, default_type: SignalType | None
) -> SourceDescription:
    """Rate and channels from the board; listed ``channels`` rename (and retype) them in order."""
    layout = board_layout(options)
    if channels is None:
        return SourceDescription(layout.rate, layout.channels)
    if channels[0].type.aperiodic:
        raise OptionError("channels", "a BrainFlow board feeds periodic types (eeg, emg, sensor, ...)")
    if len(channels) != len(layout.channels):
        listing = ", ".join(f"{c.label}:{c.type.name}" for c in layout.channels)
        raise OptionError(
            "channels", f"lists {len(channels)} channels, the board gives {len(layout.channels)} rows as "
            f"configured: {listing}"
        )
    return SourceDescription(layout.rate, channels)


@implementer(ISource)
class BrainFlowSource(DeviceSource):
    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.board_id = int(spec.options.get("board_id", -1))  # type: ignore[call-overload]
        self.layout = board_layout(spec.options)
        if len(self.layout.rows) != len(spec.channels):
            raise OptionError("channels", f"the board gives {len(self.layout.rows)} rows, the section lists "
                                          f"{len(spec.channels)} channels")
        if self.layout.rate != spec.sampling_rate:
            raise OptionError("rate", f"board {self.board_id} samples at {self.layout.rate} Hz; remove rate")
        self.description = f"BrainFlow board {self.board_id}"

    def _params(self, board_shim: Any) -> Any:
        params = board_shim.BrainFlowInputParams()
        for key, kind in PARAMS.items():
            if key in self.spec.options:
                setattr(params, key, kind(self.spec.options[key]))
        return params

    def acquire(self, stopping: threading.Event) -> None:
        board_shim = import_brainflow()
        board = board_shim.BoardShim(self.board_id, self._params(board_shim))
        rows = list(self.layout.rows)
        try:
            board.prepare_session()
            board.start_stream(max(int(self.layout.rate) * RING_SECONDS, 1000))
            self.note("info", f"BrainFlow board {self.board_id} streaming at {float(self.layout.rate):g} Hz")
            while not stopping.is_set():
                data = board.get_board_data()
                if data.shape[1]:
                    self.deliver(data[rows])
                else:
                    stopping.wait(POLL_SECONDS)
        finally:
            if board.is_prepared():
                try:
                    board.stop_stream()
                except board_shim.BrainFlowError:
                    pass  # not streaming
                board.release_session()
