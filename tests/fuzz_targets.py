"""Fuzz targets: every parser of wire input, bytes in, its contract checked.

Shared by the hypothesis tests (tests/test_fuzz.py) and the coverage-guided
atheris runs (tests/fuzz_atheris.py). Each target takes arbitrary bytes and
may only fail with the error its parser documents; anything else (an
IndexError, a struct.error, an endless loop) is a bug a peer could trigger.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import cache

import numpy as np
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from tia.protocol.control import ControlParser, ControlProtocolError
from tia.protocol.custom import CustomSignalInfo, CustomSignalInfoError
from tia.protocol.metainfo import MetaInfo, MetaInfoError
from tia.protocol.packet import PacketError, PacketStreamDecoder, decode_packet, encode_header
from tia.protocol.xmlsafe import parse_xml
from tia.server.control import ControlFactory, ServerControlProtocol
from tia.sources.injected import EventRejected, parse_line


def chunks(data: bytes) -> list[bytes]:
    """Cut ``data`` where its first byte says: the same input arrives in different segments."""
    if not data:
        return [b""]
    step = data[0] % 17 + 1
    rest = data[1:]
    return [rest[i : i + step] for i in range(0, len(rest), step)] or [b""]


def control_parser(data: bytes) -> None:
    parser = ControlParser(max_line_length=64, max_content_length=128)
    try:
        for chunk in chunks(data):
            for message in parser.feed(chunk):
                assert len(message.content) <= 128
                assert "\n" not in message.command
    except ControlProtocolError as error:
        assert str(error)


def packet(data: bytes) -> None:
    try:
        decoded = decode_packet(data)
    except PacketError:
        return
    # what decodes re-encodes to the same bytes: nothing was misread
    arrays = list(decoded.signals.values())
    count = len(arrays)
    body = (
        struct.pack(f"<{count}H", *(a.shape[0] for a in arrays))
        + struct.pack(f"<{count}H", *(a.shape[1] for a in arrays))
        + b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)
    )
    header = encode_header(len(body), decoded.flags, decoded.packet_id, decoded.connection_number, decoded.timestamp)
    assert header + body == data


def packet_stream(data: bytes) -> None:
    decoder = PacketStreamDecoder(max_size=4096)
    pieces = chunks(data)
    consumed = 0
    try:
        for chunk in pieces:
            for item in decoder.feed(chunk):
                consumed += 33 + 4 * len(item.signals) + sum(a.nbytes for a in item.signals.values())
    except PacketError:
        return
    assert consumed + decoder.buffered == sum(map(len, pieces))  # every byte accounted for


def xml(data: bytes) -> None:
    try:
        root = parse_xml(data, max_bytes=4096, max_depth=8)
    except ValueError:
        return
    depth = 0
    stack = [(root, 1)]
    while stack:
        element, level = stack.pop()
        depth = max(depth, level)
        stack.extend((child, level + 1) for child in element)
    assert depth <= 8


def metainfo(data: bytes) -> None:
    try:
        parsed = MetaInfo.from_xml(data)
    except MetaInfoError:
        return
    sent = parsed.to_xml()  # what we accept, we can send back, and read back as sent
    assert MetaInfo.from_xml(sent).to_xml() == sent


@cache
def _server_metainfo() -> MetaInfo:
    return MetaInfo.from_xml(
        b'<tiaMetaInfo version="1.0"><masterSignal samplingRate="512" blockSize="16"/>'
        b'<signal type="eeg" samplingRate="512" blockSize="16" numChannels="4">'
        b'<channel nr="1" label="Cz"/><channel nr="2" label="C3"/><channel nr="3" label="C4"/>'
        b'<channel nr="4" label="Pz"/></signal>'
        b'<signal type="bp" samplingRate="64" blockSize="2" numChannels="1"/>'
        b'<signal type="event" samplingRate="32" blockSize="1" numChannels="1"/></tiaMetaInfo>'
    )


def custom_signal_info(data: bytes) -> None:
    server = _server_metainfo()
    try:
        custom = CustomSignalInfo.from_xml(data, server)
    except CustomSignalInfoError as error:
        assert str(error)
        return
    custom.metainfo(server).to_xml()
    custom.describe()


def event_line(data: bytes) -> None:
    try:
        target, values = parse_line(data.decode("utf-8", "replace"))
    except EventRejected:
        return
    assert values and all(np.isfinite(values))
    assert target is None or target.strip() == target


@cache
def _server_factory() -> ControlFactory:
    from support import MemoryReactorWithUDP, ramp_config

    from tia.server.service import TiAService

    config = ramp_config(rate=250, blocksize=1, channels=4)
    return TiAService(config, MemoryReactorWithUDP()).factory


def server_control(data: bytes) -> None:
    """The daemon's control protocol: whatever arrives, it answers well-formed replies or closes."""
    factory = _server_factory()
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
    assert isinstance(protocol, ServerControlProtocol)
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 9000), peerAddress=IPv4Address("TCP", "127.0.0.1", 5000)
    )
    protocol.makeConnection(transport)
    try:
        for chunk in chunks(data):
            protocol.dataReceived(chunk)
            if transport.disconnecting:
                break
        replies = ControlParser().feed(transport.value())  # a client reads them without error
        if transport.disconnecting:
            assert replies and replies[-1].command == "Error", replies
    finally:
        if protocol.tcp_listener is not None:
            protocol.tcp_listener.close()
        protocol.connectionLost(Failure(ConnectionDone()))
        hub = factory.data.hub
        for subscriber in hub.subscribers:
            hub.unsubscribe(subscriber)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "control_parser": control_parser,
    "packet": packet,
    "packet_stream": packet_stream,
    "xml": xml,
    "metainfo": metainfo,
    "custom_signal_info": custom_signal_info,
    "event_line": event_line,
    "server_control": server_control,
}


def _seeds() -> dict[str, list[bytes]]:
    """Valid inputs to start from: a fuzzer rarely invents well-formed XML or a packet header."""
    from tia.protocol.packet import encode_packet

    meta = _server_metainfo().to_xml()
    custom = (
        b'<tiaCustomSignalInfo version="1.0"><signal type="eeg" samplingRate="128" blockSize="4" '
        b'numChannels="2" downsamplingFactor="4"><channel nr="1" label="Cz"/><channel nr="3" label="C4"/>'
        b'</signal></tiaCustomSignalInfo>'
    )
    session = b"".join(
        b"TiA 1.0\n%s\n\n" % command
        for command in (b"CheckProtocolVersion", b"GetMetaInfo", b"GetServerStateConnection", b"FooBar")
    ) + b"TiA 1.0\nSetCustomSignalInfo\nContent-Length:%d\n\n" % len(custom) + custom + (
        b"TiA 1.0\nGetDataConnection:TCP\n\nTiA 1.0\nStartDataTransmission\n\nTiA 1.0\nStopDataTransmission\n\n"
    )
    packets = [
        encode_packet(7, 3, 70_000, [(0x1, np.arange(8, dtype=np.float32).reshape(4, 2)), (0x40, [[1.0]])]),
        encode_packet(0, 0, 0, []),
    ]
    return {
        "control_parser": [b"\x10" + session, b"\x03TiA 1.0\nOK\nContent-Length:3\n\nabc"],
        "packet": packets,
        "packet_stream": [b"\x10" + b"".join(packets), b"\x00" + packets[0] * 3],
        "xml": [meta, custom],
        "metainfo": [meta, meta.replace(b"samplingRate", b"sampleRate")],
        "custom_signal_info": [custom],
        "event_line": [b"7", b"keycode 65 66", b"trigger 1e3"],
        "server_control": [b"\x10" + session, b"\x05" + session],
    }


SEEDS = _seeds()
