"""The metainfo document: subject, master signal, signals and channels <-> XML.

We send the reference's exact layout (tabs, no XML declaration, ``\\n\\n`` at
the end, counted in Content-Length) and accept the variants of SPEC section 3:
``sampleRate``, ``lastName``, type aliases, missing channel elements, any order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from tia.protocol.signals import SignalType, UnknownSignalType, by_name
from tia.protocol.xmlsafe import parse_xml

_ATTRIBUTE_ESCAPES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


class MetaInfoError(ValueError):
    """A metainfo document that cannot be understood."""


@dataclass(frozen=True)
class Subject:
    id: str = ""
    first_name: str = ""
    surname: str = ""


@dataclass(frozen=True)
class SignalInfo:
    """One signal as the metainfo describes it. ``labels[i]`` is channel ``i + 1``."""

    type: SignalType
    sampling_rate: float
    block_size: int
    labels: tuple[str | None, ...]

    @property
    def num_channels(self) -> int:
        return len(self.labels)

    @property
    def flag(self) -> int:
        return self.type.flag

    @property
    def channel_names(self) -> tuple[str, ...]:
        """The labels, an unlabelled channel named after the type and its number (``eeg3``)."""
        return tuple(label or f"{self.type.name}{n}" for n, label in enumerate(self.labels, start=1))


@dataclass(frozen=True)
class MetaInfo:
    """What a server streams. Signals are kept in ascending flag order (the wire order)."""

    master_sampling_rate: float
    master_block_size: int
    signals: tuple[SignalInfo, ...]
    subject: Subject = field(default_factory=Subject)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.signals, key=lambda s: s.flag))
        flags = [s.flag for s in ordered]
        if len(set(flags)) != len(flags):
            raise MetaInfoError("at most one signal per signal type")
        object.__setattr__(self, "signals", ordered)

    def signal(self, name_or_flag: str | int) -> SignalInfo:
        """The signal of that type (name, alias or flag); ``KeyError`` if absent."""
        flag = name_or_flag if isinstance(name_or_flag, int) else by_name(name_or_flag).flag
        for signal in self.signals:
            if signal.flag == flag:
                return signal
        raise KeyError(name_or_flag)

    def to_xml(self) -> bytes:
        """The reference's exact metainfo document."""
        lines = ['<tiaMetaInfo version="1.0">']
        lines.append(
            f"\t<subject id={_attr(self.subject.id)} firstName={_attr(self.subject.first_name)}"
            f" surname={_attr(self.subject.surname)}/>"
        )
        lines.append(
            f'\t<masterSignal samplingRate="{format_rate(self.master_sampling_rate)}"'
            f' blockSize="{self.master_block_size}"/>'
        )
        for signal in self.signals:
            lines.append(
                f'\t<signal type="{signal.type.name}"'
                f' samplingRate="{format_rate(signal.sampling_rate)}"'
                f' blockSize="{signal.block_size}" numChannels="{signal.num_channels}">'
            )
            for number, label in enumerate(signal.labels, start=1):
                lines.append(f'\t\t<channel nr="{number}" label={_attr(label or "")}/>')
            lines.append("\t</signal>")
        lines.append("</tiaMetaInfo>")
        return ("\n".join(lines) + "\n\n").encode("utf-8")

    @classmethod
    def from_xml(cls, data: bytes) -> MetaInfo:
        """Parse any metainfo variant the known peers send."""
        try:
            root = parse_xml(data)
        except ValueError as error:
            raise MetaInfoError(str(error)) from None
        if root.tag != "tiaMetaInfo":
            raise MetaInfoError(f"root element is <{root.tag}>, expected <tiaMetaInfo>")

        subject = Subject()
        subject_element = root.find("subject")
        if subject_element is not None:
            subject = Subject(
                id=subject_element.get("id", ""),
                first_name=subject_element.get("firstName", ""),
                surname=subject_element.get("surname", subject_element.get("lastName", "")),
            )

        signals = [_parse_signal(element) for element in root.findall("signal")]
        if not signals:
            raise MetaInfoError("metainfo describes no signal")

        master_element = root.find("masterSignal")
        if master_element is not None:
            master_rate = _rate_attribute(master_element, "masterSignal")
            master_block = _int_attribute(master_element, "blockSize", "masterSignal")
        else:
            # Wire (flag) order, not document order: any signal order must give
            # the same MetaInfo.
            ordered = sorted(signals, key=lambda s: s.flag)
            periodic = [s for s in ordered if not s.type.aperiodic] or ordered
            master_rate, master_block = periodic[0].sampling_rate, periodic[0].block_size
        try:
            return cls(master_rate, master_block, tuple(signals), subject)
        except MetaInfoError:
            raise
        except ValueError as error:
            raise MetaInfoError(str(error)) from None


def format_rate(rate: float) -> str:
    """Rates as the reference writes them: integers without a decimal point."""
    return str(int(rate)) if float(rate).is_integer() else repr(float(rate))


def _attr(value: str) -> str:
    return '"' + escape(value, _ATTRIBUTE_ESCAPES) + '"'


def _int_attribute(element: object, name: str, where: str) -> int:
    text = element.get(name)  # type: ignore[attr-defined]
    if text is None:
        raise MetaInfoError(f"<{where}> lacks the {name} attribute")
    try:
        value = int(text.strip())
    except ValueError:
        raise MetaInfoError(f"<{where}> {name}={text!r} is not an integer") from None
    if value < 1 or value > 0xFFFF:
        raise MetaInfoError(f"<{where}> {name}={value} is out of range 1..65535")
    return value


def _rate_attribute(element: object, where: str) -> float:
    text = element.get("samplingRate", element.get("sampleRate"))  # type: ignore[attr-defined]
    if text is None:
        raise MetaInfoError(f"<{where}> lacks the samplingRate attribute")
    try:
        rate = float(text.strip())
    except ValueError:
        raise MetaInfoError(f"<{where}> samplingRate={text!r} is not a number") from None
    if not rate > 0 or rate == float("inf"):
        raise MetaInfoError(f"<{where}> samplingRate={text!r} must be positive")
    return rate


def _parse_signal(element: object) -> SignalInfo:
    type_name = element.get("type")  # type: ignore[attr-defined]
    if type_name is None:
        raise MetaInfoError("<signal> lacks the type attribute")
    try:
        signal_type = by_name(type_name)
    except UnknownSignalType as error:
        raise MetaInfoError(str(error)) from None
    where = f"signal type={type_name!r}"
    rate = _rate_attribute(element, where)
    block_size = _int_attribute(element, "blockSize", where)
    num_channels = _int_attribute(element, "numChannels", where)
    labels: list[str | None] = [None] * num_channels
    for channel in element.findall("channel"):  # type: ignore[attr-defined]
        number = _int_attribute(channel, "nr", f"{where} channel")
        if number > num_channels:
            raise MetaInfoError(f"<{where}> channel nr={number} exceeds numChannels={num_channels}")
        labels[number - 1] = channel.get("label")
    return SignalInfo(signal_type, rate, block_size, tuple(labels))

