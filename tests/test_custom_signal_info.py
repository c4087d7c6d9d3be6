"""Custom signal info (SPEC section 6): parsing, every rejection with its reason, the XML we build,
the customized metainfo; and the control channel's SetCustomSignalInfo over StringTransport."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import support
from hypothesis import given, settings
from hypothesis import strategies as st
from support import ramp_config
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from tia.protocol.control import ControlParser
from tia.protocol.custom import (
    MAX_DOWNSAMPLING_FACTOR,
    CustomSignal,
    CustomSignalInfo,
    CustomSignalInfoError,
    build_custom_xml,
)
from tia.protocol.metainfo import MetaInfo, SignalInfo, Subject
from tia.protocol.signals import by_name
from tia.server.control import ServerControlProtocol
from tia.server.custom import CustomStream


def sig(name: str, rate: float, block: int, *labels: str | None) -> SignalInfo:
    return SignalInfo(by_name(name), rate, block, tuple(labels))


EEG_LABELS = ("Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4")
SERVER = MetaInfo(
    1000,
    8,
    (
        sig("eeg", 1000, 8, *EEG_LABELS),
        sig("eog", 1000, 8, "HEOG", "VEOG"),
        sig("bp", 250, 2, "BP"),
        sig("button", 125, 1, "B1", "B2"),
    ),
    Subject("S01", "Ann", "Lee"),
)

# What the reference's custom client sends: its own builder's layout, with the
# server's rate and block size, the server's channel numbers and labels.
REFERENCE_REQUEST = (
    b'<tiaCustomSignalInfo version="1.0">\n'
    b'\t<masterSignal samplingRate="1000" blockSize="8"/>\n'
    b'\t<signal type="eeg" samplingRate="1000" blockSize="8" downsamplingFactor="4" numChannels="3">\n'
    b'\t\t<channel nr="1" label="Fp1"/>\n'
    b'\t\t<channel nr="5" label="C3"/>\n'
    b'\t\t<channel nr="7" label="P3"/>\n'
    b"\t</signal>\n"
    b'\t<signal type="bp" samplingRate="250" blockSize="2" downsamplingFactor="1" numChannels="1">\n'
    b'\t\t<channel nr="1" label="BP"/>\n'
    b"\t</signal>\n"
    b"</tiaCustomSignalInfo>\n\n"
)


def request(*signals: str, root: str = '<tiaCustomSignalInfo version="1.0">') -> bytes:
    return (root + "".join(signals) + "</tiaCustomSignalInfo>").encode()


def signal(attributes: str, *numbers: int | str) -> str:
    channels = "".join(f'<channel nr="{n}"/>' for n in numbers)
    return f"<signal {attributes}>{channels}</signal>"


# -- parsing -----------------------------------------------------------------------


def test_reference_request_is_understood() -> None:
    custom = CustomSignalInfo.from_xml(REFERENCE_REQUEST, SERVER)
    assert custom.signals == (
        CustomSignal(by_name("eeg"), (0, 4, 6), 4),
        CustomSignal(by_name("bp"), (0,), 1),
    )
    assert custom.describe() == "eeg[1,5,7]/4, bp[1]"
    assert not custom.is_identity(SERVER)


def test_channels_keep_the_requested_order() -> None:
    custom = CustomSignalInfo.from_xml(request(signal('type="eeg"', 7, 1, 5)), SERVER)
    assert custom.signals[0].channels == (6, 0, 4)


def test_liberal_input() -> None:
    """Declaration, aliases, any case, numChannels and rates optional, "4.0" as a factor, no version."""
    document = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<tiaCustomSignalInfo>'
        b'<signal type="BUTTONS"><channel nr="2" label="whatever"/></signal>'
        b'<signal type="EEG" downsamplingFactor="4.0" sampleRate="250"><channel nr=" 3 "/></signal>'
        b"</tiaCustomSignalInfo>"
    )
    custom = CustomSignalInfo.from_xml(document, SERVER)
    assert custom.signals == (
        CustomSignal(by_name("eeg"), (2,), 4),
        CustomSignal(by_name("button"), (1,), 1),
    )


@pytest.mark.parametrize(
    ("attributes", "accepted"),
    [
        ('samplingRate="1000" blockSize="8"', True),  # the server's (the reference's convention)
        ('samplingRate="250" blockSize="2"', True),  # the result
        ('samplingRate="1000" blockSize="2"', True),
        ('samplingRate="250.0"', True),
        ("", True),
        ('samplingRate="500"', False),
        ('blockSize="4"', False),
        ('samplingRate="62.5"', False),
    ],
)
def test_declared_rate_and_block_size_must_be_consistent(attributes: str, accepted: bool) -> None:
    document = request(signal(f'type="eeg" downsamplingFactor="4" {attributes}', 1))
    if accepted:
        assert CustomSignalInfo.from_xml(document, SERVER).signals[0].downsampling_factor == 4
    else:
        pattern = r"is inconsistent: expected (1000 .* or 250|8 .* or 2) "
        with pytest.raises(CustomSignalInfoError, match=pattern):
            CustomSignalInfo.from_xml(document, SERVER)


REJECTIONS = [
    # (document, reason the reply must carry)
    (b"<tiaCustomSignalInfo", "not usable XML"),
    (b"", "not usable XML"),
    (b'<!DOCTYPE x [<!ENTITY a "b">]><tiaCustomSignalInfo/>', "not usable XML"),
    (b"<tiaMetaInfo/>", "root element is <tiaMetaInfo>, expected <tiaCustomSignalInfo>"),
    (request(root='<tiaCustomSignalInfo version="2.0">'), "version '2.0' is not supported"),
    (request(), "empty selection: the custom signal info names no signal"),
    (request(signal('type="eeg"')), "empty selection: signal type 'eeg' selects no channel"),
    (request(signal('type="eeg" numChannels="0"')), "empty selection: signal type 'eeg' selects no channel"),
    (request(signal('samplingRate="1000"', 1)), "<signal> lacks the type attribute"),
    (request(signal('type="foo"', 1)), "unknown signal type 'foo'"),
    (request(signal('type="emg"', 1)), "unknown signal type 'emg': this server streams eeg, eog, bp, button"),
    (request(signal('type="eeg"', 1), signal('type="EEG"', 2)), "signal type 'eeg' is given twice"),
    (request(signal('type="eeg" numChannels="3"', 1, 2)), "numChannels=3 does not match its 2 channel elements"),
    (request(signal('type="eeg" numChannels="two"', 1, 2)), "numChannels='two' is not an integer"),
    (request('<signal type="eeg"><channel label="Fp1"/></signal>'), "a <channel> lacks the nr attribute"),
    (request(signal('type="eeg"', "x")), "channel nr='x' is not an integer"),
    (request(signal('type="eeg"', 0)), "channel nr='0' is not a channel number"),
    (request(signal('type="eeg"', 9)), "channel nr=9 is beyond the signal's 8 channels"),
    (request(signal('type="bp"', 1, 2)), "channel nr=2 is beyond the signal's 1 channel"),
    (request(signal('type="eeg"', 3, 1, 3)), "channel nr=3 is selected twice"),
    (request(signal('type="eeg" downsamplingFactor="2.5"', 1)), "downsamplingFactor='2.5' is not an integer >= 1"),
    (request(signal('type="eeg" downsamplingFactor="0"', 1)), "downsamplingFactor='0' is not an integer >= 1"),
    (request(signal('type="eeg" downsamplingFactor="-2"', 1)), "downsamplingFactor='-2' is not an integer >= 1"),
    (request(signal('type="eeg" downsamplingFactor="four"', 1)), "downsamplingFactor='four' is not an integer >= 1"),
    (request(signal('type="eeg" downsamplingFactor="nan"', 1)), "downsamplingFactor='nan' is not an integer >= 1"),
    (
        request(signal('type="eeg" downsamplingFactor="3"', 1)),
        "downsamplingFactor 3 does not divide its block size of 8 samples; every packet must carry"
        " blockSize / factor samples so that the packet rate stays the master's (possible factors: 1, 2, 4, 8)",
    ),
    (request(signal('type="eeg" downsamplingFactor="16"', 1)), "downsamplingFactor 16 does not divide"),
    (
        request(signal(f'type="eeg" downsamplingFactor="{MAX_DOWNSAMPLING_FACTOR * 2}"', 1)),
        f"exceeds the supported maximum of {MAX_DOWNSAMPLING_FACTOR}",
    ),
    (
        request(signal('type="button" downsamplingFactor="2"', 1)),
        "signal type 'button' is aperiodic and cannot be downsampled (downsamplingFactor must be 1)",
    ),
    (request(signal('type="eeg" samplingRate="fast"', 1)), "samplingRate='fast' is not a number"),
    (
        request(signal('type="eeg" samplingRate="500"', 1)),
        "signal type 'eeg': samplingRate='500' is inconsistent: expected 1000 (the server's)",
    ),
]


@pytest.mark.parametrize(("document", "reason"), REJECTIONS)
def test_every_rejection_says_why(document: bytes, reason: str) -> None:
    with pytest.raises(CustomSignalInfoError) as caught:
        CustomSignalInfo.from_xml(document, SERVER)
    assert reason in str(caught.value)


# -- the short form the clients use ----------------------------------------------------


def test_spec_defaults_aliases_labels_and_flags() -> None:
    custom = CustomSignalInfo.from_spec(
        {"EEG": {"channels": [7, "Fp1", 5], "downsample": 4}, "bp": {}, 0x40: None}, SERVER
    )
    assert custom.signals == (
        CustomSignal(by_name("eeg"), (6, 0, 4), 4),
        CustomSignal(by_name("bp"), (0,), 1),
        CustomSignal(by_name("button"), (0, 1), 1),
    )


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({}, "empty selection"),
        ({"emg": {}}, "unknown signal type 'emg'"),
        ({"nope": {}}, "unknown signal type 'nope'"),
        ({"eeg": {}, "EEG": {}}, "given twice"),
        ({"eeg": {"chanels": [1]}}, "unknown option(s) chanels"),
        ({"eeg": {"channels": []}}, "empty selection"),
        ({"eeg": {"channels": "Fp1"}}, "channels must be a list"),
        ({"eeg": {"channels": [9]}}, "channel nr=9 is beyond the signal's 8 channels"),
        ({"eeg": {"channels": [0]}}, "not a channel number"),
        ({"eeg": {"channels": ["Oz"]}}, "the label 'Oz' names no channel"),
        ({"eeg": {"channels": [1.0]}}, "neither a channel number nor a label"),
        ({"eeg": {"channels": [True]}}, "neither a channel number nor a label"),
        ({"eeg": {"downsample": 2.0}}, "downsample 2.0 is not an integer"),
        ({"eeg": {"downsample": True}}, "downsample True is not an integer"),
        ({"eeg": {"downsample": 0}}, "downsamplingFactor 0 is not an integer >= 1"),
        ({"eeg": {"downsample": 3}}, "does not divide its block size of 8 samples"),
        ({"button": {"downsample": 2}}, "aperiodic"),
        ({"eeg": [1, 2]}, "options must be a mapping"),
    ],
)
def test_spec_rejections(spec: dict[object, object], reason: str) -> None:
    with pytest.raises(CustomSignalInfoError) as caught:
        CustomSignalInfo.from_spec(spec, SERVER)  # type: ignore[arg-type]  # the wrong specs under test
    assert reason in str(caught.value)


def test_ambiguous_label_is_refused() -> None:
    server = MetaInfo(100, 1, (sig("eeg", 100, 1, "A", "A"),))
    with pytest.raises(CustomSignalInfoError, match="names 2 channels"):
        CustomSignalInfo.from_spec({"eeg": {"channels": ["A"]}}, server)


# -- the XML we build ----------------------------------------------------------------


def test_built_request_is_the_reference_layout() -> None:
    xml = build_custom_xml({"eeg": {"channels": [1, 5, 7], "downsample": 4}, "bp": {}}, SERVER)
    assert xml == (
        b'<tiaCustomSignalInfo version="1.0">\n'
        b'\t<signal type="eeg" samplingRate="1000" blockSize="8" downsamplingFactor="4" numChannels="3">\n'
        b'\t\t<channel nr="1" label="Fp1"/>\n'
        b'\t\t<channel nr="5" label="C3"/>\n'
        b'\t\t<channel nr="7" label="P3"/>\n'
        b"\t</signal>\n"
        b'\t<signal type="bp" samplingRate="250" blockSize="2" downsamplingFactor="1" numChannels="1">\n'
        b'\t\t<channel nr="1" label="BP"/>\n'
        b"\t</signal>\n"
        b"</tiaCustomSignalInfo>\n"
    )


def test_labels_are_escaped() -> None:
    server = MetaInfo(100, 1, (sig("eeg", 100, 1, 'a"<&>\tb', None),))
    custom = CustomSignalInfo.from_spec({"eeg": {"channels": [2, 1]}}, server)
    xml = custom.to_xml(server)
    assert b'label="a&quot;&lt;&amp;&gt;&#9;b"' in xml and b'<channel nr="2" label=""/>' in xml
    assert CustomSignalInfo.from_xml(xml, server) == custom


@st.composite
def customizations(draw: st.DrawFn) -> CustomSignalInfo:
    chosen = draw(st.lists(st.sampled_from(SERVER.signals), min_size=1, max_size=4, unique_by=lambda s: s.flag))
    signals = []
    for server_signal in chosen:
        count = draw(st.integers(1, server_signal.num_channels))
        channels = draw(st.permutations(range(server_signal.num_channels)))[:count]
        factors = [f for f in range(1, server_signal.block_size + 1) if server_signal.block_size % f == 0]
        factor = 1 if server_signal.type.aperiodic else draw(st.sampled_from(factors))
        signals.append(CustomSignal(server_signal.type, tuple(channels), factor))
    return CustomSignalInfo(tuple(signals))


@settings(max_examples=200, deadline=None)
@given(customizations())
def test_xml_round_trip(custom: CustomSignalInfo) -> None:
    assert CustomSignalInfo.from_xml(custom.to_xml(SERVER), SERVER) == custom


@settings(max_examples=200, deadline=None)
@given(customizations())
def test_customized_metainfo_describes_what_is_sent(custom: CustomSignalInfo) -> None:
    meta = custom.metainfo(SERVER)
    assert [s.flag for s in meta.signals] == [c.flag for c in custom.signals]
    packet_rate = SERVER.master_sampling_rate / SERVER.master_block_size
    assert meta.master_sampling_rate / meta.master_block_size == packet_rate
    for wanted, got in zip(custom.signals, meta.signals, strict=True):
        original = SERVER.signal(wanted.flag)
        assert got.sampling_rate == original.sampling_rate / wanted.downsampling_factor
        assert got.block_size == original.block_size // wanted.downsampling_factor
        assert got.labels == tuple(original.labels[i] for i in wanted.channels)
        if not got.type.aperiodic:
            assert got.sampling_rate / got.block_size == packet_rate
    assert MetaInfo.from_xml(meta.to_xml()) == meta  # a valid metainfo for every client


def test_customized_metainfo_document() -> None:
    custom = CustomSignalInfo.from_xml(REFERENCE_REQUEST, SERVER)
    assert custom.metainfo(SERVER).to_xml() == (
        b'<tiaMetaInfo version="1.0">\n'
        b'\t<subject id="S01" firstName="Ann" surname="Lee"/>\n'
        b'\t<masterSignal samplingRate="250" blockSize="2"/>\n'
        b'\t<signal type="eeg" samplingRate="250" blockSize="2" numChannels="3">\n'
        b'\t\t<channel nr="1" label="Fp1"/>\n'  # renumbered 1..n, in the requested order
        b'\t\t<channel nr="2" label="C3"/>\n'
        b'\t\t<channel nr="3" label="P3"/>\n'
        b"\t</signal>\n"
        b'\t<signal type="bp" samplingRate="250" blockSize="2" numChannels="1">\n'
        b'\t\t<channel nr="1" label="BP"/>\n'
        b"\t</signal>\n"
        b"</tiaMetaInfo>\n\n"
    )


def test_master_of_the_customized_metainfo() -> None:
    # the master signal (eeg) not selected: the first periodic selected one takes the role
    only_bp = CustomSignalInfo.from_spec({"bp": {"downsample": 2}, "button": {}}, SERVER).metainfo(SERVER)
    assert (only_bp.master_sampling_rate, only_bp.master_block_size) == (125, 1)
    # only aperiodic signals: the server's master stays (it still sets the packet rate)
    only_button = CustomSignalInfo.from_spec({"button": {}}, SERVER).metainfo(SERVER)
    assert (only_button.master_sampling_rate, only_button.master_block_size) == (1000, 8)


def test_identity() -> None:
    everything: dict[str | int, Mapping[str, object] | None] = {s.type.name: {} for s in SERVER.signals}
    assert CustomSignalInfo.from_spec(everything, SERVER).is_identity(SERVER)
    assert not CustomSignalInfo.from_spec({**everything, "eeg": {"downsample": 2}}, SERVER).is_identity(SERVER)
    reordered = {**everything, "eog": {"channels": [2, 1]}}
    assert not CustomSignalInfo.from_spec(reordered, SERVER).is_identity(SERVER)
    assert not CustomSignalInfo.from_spec({"eeg": {}}, SERVER).is_identity(SERVER)


# -- the control channel ---------------------------------------------------------------


class Wire(support.Wire):
    """One control connection on StringTransport to a 4-channel ramp server (1000 Hz, blocks of 8)."""

    def __init__(self, udp_mode: str = "unicast", peer: str = "127.0.0.1") -> None:
        super().__init__(ramp_config(rate=1000, blocksize=8, channels=4, udp_mode=udp_mode), peer)

    def command(self, command: str) -> bytes:
        return self.send(f"TiA 1.0\n{command}\n\n".encode())

    def customize(self, content: bytes) -> bytes:
        return self.send(b"TiA 1.0\nSetCustomSignalInfo\nContent-Length:%d\n\n%s" % (len(content), content))


SELECT = request(signal('type="eeg" downsamplingFactor="2" numChannels="2"', 3, 1))


def test_accepted_then_metainfo_describes_this_connection_only() -> None:
    wire = Wire()
    other = wire.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5001))
    assert isinstance(other, ServerControlProtocol)
    other_transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5001))
    other.makeConnection(other_transport)

    assert wire.customize(SELECT) == b"TiA 1.0\nOK\n\n"
    (reply,) = ControlParser().feed(wire.command("GetMetaInfo"))
    meta = MetaInfo.from_xml(reply.content)
    assert reply.command == "MetaInfo"
    assert (meta.master_sampling_rate, meta.master_block_size) == (500, 4)
    assert meta.signal("eeg").labels == ("eeg3", "eeg1")

    other.dataReceived(b"TiA 1.0\nGetMetaInfo\n\n")
    assert other_transport.value() == wire.service_metainfo_reply  # the others are untouched


def test_validation_error_in_the_reference_form_and_the_connection_stays_usable() -> None:
    wire = Wire()
    reply = wire.customize(request(signal('type="eeg" downsamplingFactor="3"', 1)))
    (message,) = ControlParser().feed(reply)
    assert message.command == "ValidationError"
    assert message.error_text().startswith("signal type 'eeg': downsamplingFactor 3 does not divide")
    assert reply.startswith(b"TiA 1.0\nValidationError\nContent-Length:")
    assert wire.command("CheckProtocolVersion") == b"TiA 1.0\nOK\n\n"
    assert wire.command("GetMetaInfo") == wire.service_metainfo_reply
    assert wire.customize(SELECT) == b"TiA 1.0\nOK\n\n"  # a refused request does not count


def test_second_request_is_refused() -> None:
    wire = Wire()
    assert wire.customize(SELECT) == b"TiA 1.0\nOK\n\n"
    assert wire.customize(SELECT) == (
        b"TiA 1.0\nError -- this connection already has a custom signal info; it cannot be changed\n\n"
    )
    assert wire.command("CheckProtocolVersion") == b"TiA 1.0\nOK\n\n"


@pytest.mark.parametrize("kind", ["TCP", "UDP"])
def test_after_get_data_connection_is_refused(kind: str) -> None:
    wire = Wire()
    wire.command(f"GetDataConnection:{kind}")
    assert wire.customize(SELECT) == (
        b"TiA 1.0\nError -- SetCustomSignalInfo must come before GetDataConnection\n\n"
    )
    assert wire.command("StartDataTransmission") == b"TiA 1.0\nOK\n\n"


@pytest.mark.parametrize(
    ("mode", "peer"),
    [
        ("broadcast\naddress = 192.168.7.255\nport = 9001", "192.168.7.20"),
        ("multicast\naddress = 239.255.7.7\nport = 9002", "127.0.0.1"),
    ],
)
def test_udp_group_modes_refuse_custom_info_but_tcp_works(mode: str, peer: str) -> None:
    wire = Wire(udp_mode=mode, peer=peer)
    assert wire.customize(SELECT) == b"TiA 1.0\nOK\n\n"
    reply = wire.command("GetDataConnection:UDP")
    name = mode.split()[0]
    assert reply == (
        f"TiA 1.0\nError -- custom signal info cannot be sent over UDP {name}: all UDP clients of this"
        " server share one datagram stream; ask for TCP instead\n\n".encode()
    )
    assert wire.hub.subscribers == ()
    assert wire.command("GetDataConnection:TCP").startswith(b"TiA 1.0\nDataConnectionPort:")


def test_group_mode_accepts_an_identity_customization() -> None:
    wire = Wire(udp_mode="multicast\naddress = 239.255.7.7\nport = 9002")
    assert wire.customize(request(signal('type="eeg"', 1, 2, 3, 4))) == b"TiA 1.0\nOK\n\n"
    assert wire.command("GetMetaInfo") == wire.service_metainfo_reply
    assert wire.command("GetDataConnection:UDP") == b"TiA 1.0\nDataConnectionPort:9002\n\n"


def test_unicast_udp_is_customized_and_unsubscribed_on_stop_and_close() -> None:
    wire = Wire()
    assert wire.customize(SELECT) == b"TiA 1.0\nOK\n\n"
    wire.command("GetDataConnection:UDP")
    wire.command("StartDataTransmission")
    (subscriber,) = wire.hub.subscribers
    assert isinstance(subscriber, CustomStream)
    assert subscriber.targets == (wire.protocol.udp_destination,)
    wire.command("StopDataTransmission")
    assert not wire.hub.subscribers
    wire.command("StartDataTransmission")
    (again,) = wire.hub.subscribers  # a fresh stream, its filter primed afresh after the gap
    assert isinstance(again, CustomStream) and again.targets == (wire.protocol.udp_destination,)
    wire.protocol.connectionLost(None)
    assert wire.hub.subscribers == ()


def test_plain_connection_subscribes_its_own_subscriber() -> None:
    wire = Wire()
    wire.command("GetDataConnection:UDP")
    wire.command("StartDataTransmission")
    assert wire.hub.subscribers == (wire.protocol.udp_destination,)
