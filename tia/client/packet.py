"""``TiAPacket``: one data packet in the seed's shape (pytia 0.1.0), plus numpy views of it.

The blocking client hands these out; they wrap the sans-IO core's
``DataPacket`` without copying samples.
"""

from __future__ import annotations

from tia.protocol.packet import DataPacket, SampleArray
from tia.protocol.signals import UnknownSignalType, by_flag

__all__ = ["TiAPacket"]


class TiAPacket:
    """One data packet in the seed's shape, plus numpy views of the same samples.

    ``signals[i]`` is signal ``i`` (ascending flag order) as one flat,
    channel-major float32 array (ch1 s1..sB, ch2 s1..sB, ...) like the seed's
    tuples; ``arrays[i]`` is the same memory shaped (channels, blocksize).
    """

    def __init__(self) -> None:
        self.signals: list[SampleArray] = []
        self.blocksizes: list[int] = []
        self.channels: list[int] = []
        self.packet_number: int = -1
        self.timestamp: int = -1
        self.packet_id: int = -1
        self.flags: int = 0
        self.types: list[str] = []
        self.arrays: list[SampleArray] = []

    @classmethod
    def from_data_packet(cls, packet: DataPacket) -> TiAPacket:
        """Wrap a packet decoded by the core; samples are shared, not copied."""
        result = cls()
        result.packet_id = packet.packet_id
        result.packet_number = packet.connection_number
        result.timestamp = packet.timestamp
        result.flags = packet.flags
        for flag in sorted(packet.signals):
            array = packet.signals[flag]
            result.arrays.append(array)
            result.signals.append(array.reshape(-1))
            result.channels.append(int(array.shape[0]))
            result.blocksizes.append(int(array.shape[1]))
            result.types.append(_type_name(flag))
        return result

    def get_channel(self, sindex: int, cindex: int = -1) -> SampleArray | list[float]:
        """The seed's accessor: cindex -1 gives the whole signal, too large a cindex ``[]``."""
        channels_in_signal = self.channels[sindex]
        block = self.blocksizes[sindex]
        data = self.signals[sindex]
        if cindex == -1:
            return data
        if cindex >= channels_in_signal:
            return []
        return data[cindex * block : cindex * block + block]

    def __repr__(self) -> str:
        shapes = ", ".join(
            f"{name}[{c}x{b}]"
            for name, c, b in zip(self.types, self.channels, self.blocksizes, strict=False)
        )
        return (
            f"<TiAPacket id={self.packet_id} number={self.packet_number}"
            f" timestamp={self.timestamp} {shapes}>"
        )


def _type_name(flag: int) -> str:
    try:
        return by_flag(flag).name
    except UnknownSignalType:
        return f"0x{flag:06x}"
