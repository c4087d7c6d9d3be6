"""Per-connection custom signal info (the libtia ``SetCustomSignalInfo`` extension, SPEC section 6).

A client may ask, before it requests its data connection, for a subset of
each signal's channels (in the order it names them) and an integer
downsampling factor per signal. This module is the sans-IO half: it parses
and validates the ``<tiaCustomSignalInfo>`` document against the server's
``MetaInfo`` into an immutable ``CustomSignalInfo``, builds that document
(for clients), and derives the metainfo the client will then receive.

The document, as the reference's custom client sends it::

    <tiaCustomSignalInfo version="1.0">
        <signal type="eeg" samplingRate="1000" blockSize="8" downsamplingFactor="4" numChannels="2">
            <channel nr="1" label="Fp1"/>
            <channel nr="5" label="C3"/>
        </signal>
    </tiaCustomSignalInfo>

``nr`` is the server's 1-based channel number. ``samplingRate`` and
``blockSize`` are optional; the reference's client sends the server's values,
others may send the resulting ones (server value / factor): both are
accepted, anything else is refused. ``label`` is informational: the server's
labels are used. Signals not named are not sent to that client.

In the customized metainfo every selected signal has ``samplingRate / factor``
and ``blockSize / factor``, its selected channels in the requested order,
renumbered ``nr = 1..n`` (as the reference does); the packet rate is the
master's, because a factor must divide the signal's block size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

from tia.protocol.metainfo import MetaInfo, SignalInfo, format_rate
from tia.protocol.signals import SignalType, UnknownSignalType, by_flag, by_name
from tia.protocol.xmlsafe import parse_xml

__all__ = [
    "MAX_DOWNSAMPLING_FACTOR",
    "CustomSignal",
    "CustomSignalInfo",
    "CustomSignalInfoError",
    "CustomSpec",
    "build_custom_xml",
]

MAX_DOWNSAMPLING_FACTOR = 256
"""Bounds the anti-aliasing filter a client can make the server build and run (its
length grows with the factor: about 470 taps at 16, 7500 at 256)."""

CustomSpec = Mapping[str | int, Mapping[str, object] | None]
"""The clients' short form: ``{"eeg": {"channels": [1, 5, 7], "downsample": 4}, "bp": {}}``.

Keys are signal type names (or aliases, or flags); ``channels`` are the server's
1-based channel numbers or labels, default all in server order; ``downsample``
is the integer factor, default 1."""

_ROOT = "tiaCustomSignalInfo"
_VERSION = "1.0"
_ATTRIBUTE_ESCAPES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


class CustomSignalInfoError(ValueError):
    """A custom signal info that the server cannot honour; the text says why."""


@dataclass(frozen=True)
class CustomSignal:
    """What one client wants of one signal.

    ``channels`` are 0-based indices into the server's channels of that signal
    (channel ``nr`` is index ``nr - 1``), in the order the client wants them.
    """

    type: SignalType
    channels: tuple[int, ...]
    downsampling_factor: int = 1

    @property
    def flag(self) -> int:
        return self.type.flag


@dataclass(frozen=True)
class CustomSignalInfo:
    """One connection's validated customization; signals kept in ascending flag order."""

    signals: tuple[CustomSignal, ...]

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.signals, key=lambda s: s.flag))
        flags = [s.flag for s in ordered]
        if len(set(flags)) != len(flags):
            raise CustomSignalInfoError("at most one entry per signal type")
        object.__setattr__(self, "signals", ordered)

    # -- checks and derived views ---------------------------------------------------

    def validate(self, server: MetaInfo) -> None:
        """Raise ``CustomSignalInfoError`` unless the server can stream exactly this."""
        if not self.signals:
            raise CustomSignalInfoError("empty selection: the custom signal info names no signal")
        for custom in self.signals:
            _check_signal(custom, _server_signal(server, custom.type.name))

    def is_identity(self, server: MetaInfo) -> bool:
        """True when this asks for exactly what everybody gets (no work for the server)."""
        return len(self.signals) == len(server.signals) and all(
            custom.flag == signal.flag
            and custom.downsampling_factor == 1
            and custom.channels == tuple(range(signal.num_channels))
            for custom, signal in zip(self.signals, server.signals, strict=True)
        )

    def metainfo(self, server: MetaInfo) -> MetaInfo:
        """The metainfo of this customized stream: rates and block sizes divided by the factor,
        the selected channels in the requested order renumbered 1..n, the same packet rate."""
        signals = []
        for custom in self.signals:
            original = server.signal(custom.flag)
            factor = custom.downsampling_factor
            signals.append(
                SignalInfo(
                    original.type,
                    original.sampling_rate / factor,
                    original.block_size // factor,
                    tuple(original.labels[index] for index in custom.channels),
                )
            )
        master_rate, master_block = server.master_sampling_rate, server.master_block_size
        periodic = [
            (custom, signal)
            for custom, signal in zip(self.signals, signals, strict=True)
            if not custom.type.aperiodic
        ]
        # The master keeps its role if it is selected, else the first periodic signal
        # takes it; either way rate / block size (the packet rate) is unchanged.
        for custom, signal in periodic:
            original = server.signal(custom.flag)
            if (original.sampling_rate, original.block_size) == (master_rate, master_block):
                master_rate, master_block = signal.sampling_rate, signal.block_size
                break
        else:
            if periodic:
                master_rate, master_block = periodic[0][1].sampling_rate, periodic[0][1].block_size
        return MetaInfo(master_rate, master_block, tuple(signals), server.subject)

    def describe(self) -> str:
        """A short human-readable summary for logs: ``eeg[1,5,7]/4, bp[1]``."""
        parts = []
        for custom in self.signals:
            channels = ",".join(str(index + 1) for index in custom.channels)
            factor = f"/{custom.downsampling_factor}" if custom.downsampling_factor > 1 else ""
            parts.append(f"{custom.type.name}[{channels}]{factor}")
        return ", ".join(parts)

    # -- XML ------------------------------------------------------------------------

    def to_xml(self, server: MetaInfo) -> bytes:
        """The request document, in the reference's layout and with its conventions: the
        server's samplingRate and blockSize, the server's channel numbers and labels."""
        lines = [f'<{_ROOT} version="{_VERSION}">']
        for custom in self.signals:
            original = server.signal(custom.flag)
            lines.append(
                f'\t<signal type="{custom.type.name}"'
                f' samplingRate="{format_rate(original.sampling_rate)}"'
                f' blockSize="{original.block_size}"'
                f' downsamplingFactor="{custom.downsampling_factor}"'
                f' numChannels="{len(custom.channels)}">'
            )
            for index in custom.channels:
                label = original.labels[index] if index < original.num_channels else None
                lines.append(f'\t\t<channel nr="{index + 1}" label={_attr(label or "")}/>')
            lines.append("\t</signal>")
        lines.append(f"</{_ROOT}>")
        return ("\n".join(lines) + "\n").encode("utf-8")

    @classmethod
    def from_xml(cls, data: bytes, server: MetaInfo) -> CustomSignalInfo:
        """Parse and validate a ``SetCustomSignalInfo`` document against the server's metainfo."""
        try:
            root = parse_xml(data)
        except ValueError as error:
            raise CustomSignalInfoError(f"custom signal info is not usable XML: {error}") from None
        if root.tag != _ROOT:
            raise CustomSignalInfoError(f"root element is <{root.tag}>, expected <{_ROOT}>")
        version = root.get("version")
        if version is not None and version.strip() != _VERSION:
            raise CustomSignalInfoError(
                f"{_ROOT} version {version!r} is not supported (expected {_VERSION})"
            )
        # <masterSignal>, which some reference builds add, is derived, never requested: ignored.
        signals: list[CustomSignal] = []
        seen: set[int] = set()
        for element in root.findall("signal"):
            custom = _parse_signal(element, server)
            if custom.flag in seen:
                raise CustomSignalInfoError(f"signal type {custom.type.name!r} is given twice")
            seen.add(custom.flag)
            signals.append(custom)
        info = cls(tuple(signals))
        info.validate(server)
        return info

    @classmethod
    def from_spec(cls, spec: CustomSpec, server: MetaInfo) -> CustomSignalInfo:
        """Build and validate from the clients' short form (see ``CustomSpec``)."""
        if not isinstance(spec, Mapping):
            raise CustomSignalInfoError(f"a custom spec is a mapping of signal types, not {type(spec).__name__}")
        signals: list[CustomSignal] = []
        seen: set[int] = set()
        for key, options in spec.items():
            signal = _server_signal(server, key)
            if signal.flag in seen:
                raise CustomSignalInfoError(f"signal type {signal.type.name!r} is given twice")
            seen.add(signal.flag)
            signals.append(_signal_from_options(signal, options))
        info = cls(tuple(signals))
        info.validate(server)
        return info


def build_custom_xml(spec: CustomSpec, server: MetaInfo) -> bytes:
    """The ``SetCustomSignalInfo`` content for ``spec`` on a server with metainfo ``server``."""
    return CustomSignalInfo.from_spec(spec, server).to_xml(server)


# -- helpers ----------------------------------------------------------------------------


def _attr(value: str) -> str:
    return '"' + escape(value, _ATTRIBUTE_ESCAPES) + '"'


def _server_signal(server: MetaInfo, key: str | int) -> SignalInfo:
    """The server's signal of type ``key``; unknown names and types it does not stream are refused."""
    try:
        signal_type = by_flag(key) if isinstance(key, int) and not isinstance(key, bool) else by_name(str(key))
    except UnknownSignalType:
        raise CustomSignalInfoError(f"unknown signal type {key!r}") from None
    try:
        return server.signal(signal_type.flag)
    except KeyError:
        streamed = ", ".join(s.type.name for s in server.signals)
        raise CustomSignalInfoError(
            f"unknown signal type {signal_type.name!r}: this server streams {streamed}"
        ) from None


def _check_signal(custom: CustomSignal, signal: SignalInfo) -> None:
    """The rules every customization obeys, however it was written."""
    where = f"signal type {signal.type.name!r}"
    if not custom.channels:
        raise CustomSignalInfoError(f"empty selection: {where} selects no channel")
    seen: set[int] = set()
    for index in custom.channels:
        if not 0 <= index < signal.num_channels:
            raise CustomSignalInfoError(
                f"{where}: channel nr={index + 1} is beyond the signal's {signal.num_channels}"
                f" channel{'s' if signal.num_channels != 1 else ''}"
            )
        if index in seen:
            raise CustomSignalInfoError(f"{where}: channel nr={index + 1} is selected twice")
        seen.add(index)
    factor = custom.downsampling_factor
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise CustomSignalInfoError(f"{where}: downsamplingFactor {factor!r} is not an integer >= 1")
    if factor == 1:
        return
    if signal.type.aperiodic:
        raise CustomSignalInfoError(
            f"{where} is aperiodic and cannot be downsampled (downsamplingFactor must be 1)"
        )
    if factor > MAX_DOWNSAMPLING_FACTOR:
        raise CustomSignalInfoError(
            f"{where}: downsamplingFactor {factor} exceeds the supported maximum of {MAX_DOWNSAMPLING_FACTOR}"
        )
    if signal.block_size % factor:
        divisors = [d for d in range(1, signal.block_size + 1) if signal.block_size % d == 0]
        raise CustomSignalInfoError(
            f"{where}: downsamplingFactor {factor} does not divide its block size of"
            f" {signal.block_size} samples; every packet must carry blockSize / factor samples"
            f" so that the packet rate stays the master's (possible factors:"
            f" {', '.join(map(str, divisors[:32]))})"
        )


def _integer(text: str, what: str) -> int:
    """An integer attribute; ``"4.0"`` is accepted as 4 (the reference reads factors as reals)."""
    stripped = text.strip()
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        value = float(stripped)
    except ValueError:
        raise CustomSignalInfoError(f"{what}={text!r} is not an integer") from None
    if not math.isfinite(value) or not value.is_integer():
        raise CustomSignalInfoError(f"{what}={text!r} is not an integer")
    return int(value)


def _parse_signal(element: Element, server: MetaInfo) -> CustomSignal:
    type_name = element.get("type")
    if type_name is None:
        raise CustomSignalInfoError("<signal> lacks the type attribute")
    signal = _server_signal(server, type_name)
    where = f"signal type {signal.type.name!r}"

    factor_text = element.get("downsamplingFactor")
    factor = 1
    if factor_text is not None:
        try:
            factor = _integer(factor_text, f"{where}: downsamplingFactor")
        except CustomSignalInfoError:
            raise CustomSignalInfoError(
                f"{where}: downsamplingFactor={factor_text!r} is not an integer >= 1"
            ) from None
        if factor < 1:
            raise CustomSignalInfoError(f"{where}: downsamplingFactor={factor_text!r} is not an integer >= 1")

    indices = []
    for channel in element.findall("channel"):
        number_text = channel.get("nr")
        if number_text is None:
            raise CustomSignalInfoError(f"{where}: a <channel> lacks the nr attribute")
        number = _integer(number_text, f"{where}: channel nr")
        if number < 1:
            raise CustomSignalInfoError(
                f"{where}: channel nr={number_text!r} is not a channel number (they start at 1)"
            )
        indices.append(number - 1)

    count_text = element.get("numChannels")
    if count_text is not None:
        count = _integer(count_text, f"{where}: numChannels")
        if count != len(indices):
            raise CustomSignalInfoError(
                f"{where}: numChannels={count} does not match its {len(indices)} channel elements"
            )

    custom = CustomSignal(signal.type, tuple(indices), factor)
    _check_signal(custom, signal)
    _check_declared(element, "samplingRate", signal.sampling_rate, factor, where, alias="sampleRate")
    _check_declared(element, "blockSize", signal.block_size, factor, where)
    return custom


def _check_declared(
    element: Element, name: str, server_value: float, factor: int, where: str, alias: str | None = None
) -> None:
    """A declared rate or block size must be the server's (the reference's convention) or the result."""
    text = element.get(name)
    if text is None and alias is not None:
        text, name = element.get(alias), alias
    if text is None:
        return
    try:
        value = float(text.strip())
    except ValueError:
        raise CustomSignalInfoError(f"{where}: {name}={text!r} is not a number") from None
    candidates = {server_value, server_value / factor}
    if not any(math.isclose(value, candidate, rel_tol=1e-9, abs_tol=1e-9) for candidate in candidates):
        expected = f"{format_rate(server_value)} (the server's)"
        if factor > 1:
            expected += f" or {format_rate(server_value / factor)} (the server's / downsamplingFactor {factor})"
        raise CustomSignalInfoError(f"{where}: {name}={text!r} is inconsistent: expected {expected}")


_SPEC_OPTIONS = ("channels", "downsample")


def _signal_from_options(signal: SignalInfo, options: Mapping[str, object] | None) -> CustomSignal:
    where = f"signal type {signal.type.name!r}"
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise CustomSignalInfoError(f"{where}: options must be a mapping, not {type(options).__name__}")
    unknown = sorted(str(key) for key in options if key not in _SPEC_OPTIONS)
    if unknown:
        raise CustomSignalInfoError(
            f"{where}: unknown option(s) {', '.join(unknown)} (known: {', '.join(_SPEC_OPTIONS)})"
        )
    factor = options.get("downsample", 1)
    if isinstance(factor, bool) or not isinstance(factor, int):
        raise CustomSignalInfoError(f"{where}: downsample {factor!r} is not an integer >= 1")
    wanted = options.get("channels")
    if wanted is None:
        indices = tuple(range(signal.num_channels))
    else:
        if isinstance(wanted, str | bytes) or not isinstance(wanted, Iterable):
            raise CustomSignalInfoError(f"{where}: channels must be a list of channel numbers or labels")
        indices = tuple(_channel_index(signal, item, where) for item in wanted)
    return CustomSignal(signal.type, indices, factor)


def _channel_index(signal: SignalInfo, item: object, where: str) -> int:
    """A 1-based channel number, or a label naming exactly one channel, as a 0-based index."""
    if isinstance(item, int) and not isinstance(item, bool):
        if item < 1:
            raise CustomSignalInfoError(f"{where}: channel nr={item} is not a channel number (they start at 1)")
        return item - 1
    if isinstance(item, str):
        matches = [index for index, label in enumerate(signal.labels) if label == item]
        if len(matches) != 1:
            problem = "no channel" if not matches else f"{len(matches)} channels"
            raise CustomSignalInfoError(f"{where}: the label {item!r} names {problem}")
        return matches[0]
    raise CustomSignalInfoError(f"{where}: channel {item!r} is neither a channel number nor a label")
