"""The control channel over StringTransport: byte-exact replies, every misuse answered."""

from __future__ import annotations

from unittest import mock

import pytest
import support
from support import ramp_config
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from tia.protocol.control import ControlParser
from tia.protocol.metainfo import MetaInfo
from tia.server.control import ServerControlProtocol


class Wire(support.Wire):
    """To a 4-channel ramp server at 250 Hz in blocks of 1."""

    def __init__(self, udp_mode: str = "unicast", extra: str = "", peer: str = "127.0.0.1") -> None:
        super().__init__(ramp_config(rate=250, blocksize=1, channels=4, udp_mode=udp_mode, extra=extra), peer)


def request(command: str) -> bytes:
    return f"TiA 1.0\n{command}\n\n".encode()


def test_reference_exact_replies() -> None:
    wire = Wire()
    assert wire.send(request("CheckProtocolVersion")) == b"TiA 1.0\nOK\n\n"
    assert wire.send(request("FooBar")) == b"TiA 1.0\nError\n\n"
    reply = wire.send(request("GetDataConnection:TCP"))
    assert reply.startswith(b"TiA 1.0\nDataConnectionPort:") and reply.endswith(b"\n\n")
    assert wire.send(request("StartDataTransmission")) == b"TiA 1.0\nOK\n\n"
    assert wire.send(request("StopDataTransmission")) == b"TiA 1.0\nOK\n\n"
    reply = wire.send(request("GetServerStateConnection"))
    assert reply.startswith(b"TiA 1.0\nServerStateConnectionPort:")
    assert not wire.transport.disconnecting


def test_metainfo_reply_reference_layout_in_one_write() -> None:
    wire = Wire()
    with mock.patch.object(wire.transport, "write", wraps=wire.transport.write) as write:
        wire.protocol.dataReceived(request("GetMetaInfo"))
    assert write.call_count == 1
    reply: bytes = write.call_args.args[0]
    head, _, content = reply.partition(b"\n\n")
    assert head.startswith(b"TiA 1.0\nMetaInfo\nContent-Length:")
    assert int(head.rsplit(b":", 1)[1]) == len(content)
    assert content.startswith(b'<tiaMetaInfo version="1.0">\n\t<subject id="T01"')
    assert content.endswith(b"</tiaMetaInfo>\n\n")
    meta = MetaInfo.from_xml(content)
    assert meta.signal("eeg").num_channels == 4
    assert (meta.master_sampling_rate, meta.master_block_size) == (250, 1)


def test_liberal_parsing_and_split_delivery() -> None:
    wire = Wire()
    data = b"TiA 1.0\r\nGetDataConnection: TCP \r\n\r\n" + request("CheckProtocolVersion")
    wire.transport.clear()
    for byte in data:
        wire.protocol.dataReceived(bytes([byte]))
    replies = ControlParser().feed(wire.transport.value())
    assert [r.command for r in replies] == ["DataConnectionPort", "OK"]


def test_tcp_data_port_is_bound_to_the_control_interface() -> None:
    wire = Wire()
    wire.send(request("GetDataConnection:TCP"))
    _port, _factory, _backlog, interface = wire.reactor.tcpServers[-1]
    assert interface == "127.0.0.1"


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("GetDataConnection:tcp", b"TCP or UDP"),
        ("GetDataConnection", b"TCP or UDP"),
        ("StartDataTransmission", b"GetDataConnection first"),
        ("StopDataTransmission", b"GetDataConnection first"),
    ],
)
def test_misuse_gets_an_error_and_the_connection_stays_usable(command: str, reason: bytes) -> None:
    wire = Wire()
    reply = wire.send(request(command))
    assert reply.startswith(b"TiA 1.0\nError -- ") and reason in reply and reply.endswith(b"\n\n")
    assert wire.send(request("CheckProtocolVersion")) == b"TiA 1.0\nOK\n\n"


def test_second_data_connection_is_refused() -> None:
    wire = Wire()
    wire.send(request("GetDataConnection:TCP"))
    assert b"already has a data connection" in wire.send(request("GetDataConnection:UDP"))


def test_custom_signal_info_refusal_consumes_the_content_and_the_connection_stays_usable() -> None:
    wire = Wire()
    content = b'<tiaCustomSignalInfo version="1.0"></tiaCustomSignalInfo>'
    message = b"TiA 1.0\nSetCustomSignalInfo\nContent-Length:%d\n\n%s" % (len(content), content)
    reply = wire.send(message + request("CheckProtocolVersion"))
    reason = b"empty selection: the custom signal info names no signal"
    assert reply == b"TiA 1.0\nValidationError\nContent-Length:%d\n\n%s" % (len(reason), reason) + (
        b"TiA 1.0\nOK\n\n"
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"TiA 2.0\nCheckProtocolVersion\n\n", b"version"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"version"),
        (b"TiA 1.0\nGetMetaInfo\nX-Foo:1\n\n", b"header"),
        (b"TiA 1.0\nSetCustomSignalInfo\nContent-Length:-1\n\n", b"Content-Length"),
        (b"TiA 1.0\nSetCustomSignalInfo\nContent-Length:99999999999\n\n", b"Content-Length"),
        (b"TiA 1.0\n\xff\xfe\n\n", b"UTF-8"),
        (b"x" * 5000, b"longer than"),
        (b"TiA 1.0\n" + b"A" * 2000 + b"\n\n", b"longer than"),
    ],
)
def test_protocol_violations_get_an_error_then_close(data: bytes, reason: bytes) -> None:
    wire = Wire()
    reply = wire.send(data)
    assert reply.startswith(b"TiA 1.0\nError -- ") and reason in reply
    assert wire.transport.disconnecting


def test_udp_unicast_announces_a_port_and_streams_to_the_peer() -> None:
    wire = Wire()
    reply = wire.send(request("GetDataConnection:UDP"))
    port = int(reply.split(b":")[1].split(b"\n")[0])
    assert 0 < port < 65536
    wire.send(request("StartDataTransmission"))
    assert wire.protocol.udp_destination is not None
    assert wire.protocol.udp_destination.address == ("127.0.0.1", port)
    assert wire.protocol.udp_destination in wire.hub.subscribers
    wire.send(request("StopDataTransmission"))
    assert wire.hub.subscribers == ()


def test_udp_off() -> None:
    wire = Wire(udp_mode="off")
    assert b"switched off" in wire.send(request("GetDataConnection:UDP"))


def test_broadcast_subnet_check_as_the_reference() -> None:
    wire = Wire(udp_mode="broadcast\naddress = 192.168.7.255\nport = 9001")
    assert wire.send(request("GetDataConnection:UDP")) == (
        b"TiA 1.0\nError -- Target and remote subnet do not match!\n\n"
    )
    inside = Wire(udp_mode="broadcast\naddress = 192.168.7.255\nport = 9001", peer="192.168.7.20")
    assert inside.send(request("GetDataConnection:UDP")) == b"TiA 1.0\nDataConnectionPort:9001\n\n"


def test_group_stream_flows_while_any_client_is_started() -> None:
    mode = "multicast\naddress = 239.255.7.7\nport = 9002"
    first = Wire(udp_mode=mode)
    second_protocol = first.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5001))
    assert isinstance(second_protocol, ServerControlProtocol)
    second_transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5001))
    second_protocol.makeConnection(second_transport)
    for protocol in (first.protocol, second_protocol):
        protocol.dataReceived(request("GetDataConnection:UDP") + request("StartDataTransmission"))
    group = first.service.data.udp_group
    assert first.hub.subscribers == (group,)
    first.protocol.dataReceived(request("StopDataTransmission"))
    assert first.hub.subscribers == (group,)
    second_protocol.connectionLost(Failure(ConnectionDone()))
    assert not first.hub.subscribers


def test_closing_control_unsubscribes_and_closes_data() -> None:
    wire = Wire()
    wire.send(request("GetDataConnection:UDP") + request("StartDataTransmission"))
    assert wire.hub.subscribers
    wire.protocol.connectionLost(Failure(ConnectionDone()))
    assert not wire.hub.subscribers
    assert wire.protocol not in wire.factory.sessions


def test_the_control_channel_is_a_line_receiver_with_the_protocol_bounds() -> None:
    from twisted.protocols.basic import LineReceiver

    wire = Wire()
    assert isinstance(wire.protocol, LineReceiver)
    assert wire.protocol.delimiter == b"\n" and wire.protocol.MAX_LENGTH == 1024


def test_floods_cost_linear_time_blank_lines_skipped_in_one_step() -> None:
    """LineReceiver's own loop copies the rest of the buffer once per line: a megabyte of
    newlines would take minutes. Ours walks the chunk once, and blank lines between messages
    never reach lineReceived."""
    wire = support.Wire(ramp_config(rate=250, blocksize=1, channels=4, server_extra="request_rate = 0"))
    with mock.patch.object(wire.protocol, "lineReceived", wraps=wire.protocol.lineReceived) as lines:
        assert wire.send(b"\n" * 1_000_000 + request("CheckProtocolVersion")) == b"TiA 1.0\nOK\n\n"
    assert [call.args for call in lines.call_args_list] == [(b"TiA 1.0",), (b"CheckProtocolVersion",), (b"",)]
    replies = wire.send(request("CheckProtocolVersion") * 100_000)  # 3.3 MB of short lines at once
    assert replies == b"TiA 1.0\nOK\n\n" * 100_000


def test_a_body_arrives_in_raw_mode_and_line_mode_resumes_after_it() -> None:
    wire = Wire()
    content = b"<tiaCustomSignalInfo/>\n\n"
    message = b"TiA 1.0\nFooBar\nContent-Length:%d\n\n" % len(content) + content + request("CheckProtocolVersion")
    with mock.patch.object(wire.protocol, "rawDataReceived", wraps=wire.protocol.rawDataReceived) as raw:
        assert wire.send(message) == b"TiA 1.0\nError\n\nTiA 1.0\nOK\n\n"
    assert [call.args for call in raw.call_args_list] == [(content,)]  # the body, newlines and all, raw and exactly
    assert wire.protocol.line_mode


def test_no_udp_socket_until_a_client_asks_for_udp() -> None:
    """A unicast server nobody asks for UDP opens no socket (and logs no 'UDPSender starting')."""
    wire = Wire()
    wire.send(request("GetDataConnection:TCP"))
    assert wire.reactor.udp_ports == []
    other = Wire(udp_mode="multicast\naddress = 239.1.2.3\nport = 9001")
    assert other.reactor.udp_ports == []
    other.send(request("GetDataConnection:UDP"))
    assert len(other.reactor.udp_ports) == 1


def test_get_server_status_answers_the_snapshot_as_json() -> None:
    import json

    wire = Wire()
    wire.send(request("GetDataConnection:TCP"))
    (reply,) = ControlParser().feed(wire.send(request("GetServerStatus")))
    assert reply.command == "ServerStatus"
    status = json.loads(reply.content)
    assert status["packet_rate"] == 250.0
    assert [s["name"] for s in status["sources"]] == ["eeg"] and status["sources"][0]["state"] == "streaming"
    assert status["clients"] == [{
        "peer": "127.0.0.1:5000", "transport": "TCP (not yet connected)", "data_peer": None, "streaming": False,
        "packets": 0, "dropped": None, "custom": False,
    }]
    assert [s["type"] for s in status["signals"]] == ["eeg"]
