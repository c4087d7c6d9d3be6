"""Control messages: the incremental parser and the builders (SPEC sections 2 and 7)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tia.protocol.control import (
    DEFAULT_MAX_CONTENT_LENGTH,
    DEFAULT_MAX_LINE_LENGTH,
    OK_REPLY,
    SERVER_STATE_RUNNING,
    SERVER_STATE_SHUTDOWN,
    VERSION,
    VERSION_LINE,
    Command,
    ControlMessage,
    ControlParser,
    ControlProtocolError,
    build_error,
    build_message,
)

# ---------------------------------------------------------------------------
# helpers


def parse(data: bytes, parser: ControlParser | None = None) -> list[ControlMessage]:
    """Feed ``data`` in one chunk to a (fresh) parser and return its messages."""
    return (parser or ControlParser()).feed(data)


def parse_bytewise(data: bytes, parser: ControlParser | None = None) -> list[ControlMessage]:
    parser = parser or ControlParser()
    messages: list[ControlMessage] = []
    for index in range(len(data)):
        messages += parser.feed(data[index : index + 1])
    return messages


def parse_chunks(chunks: list[bytes], parser: ControlParser | None = None) -> list[ControlMessage]:
    parser = parser or ControlParser()
    messages: list[ControlMessage] = []
    for chunk in chunks:
        messages += parser.feed(chunk)
    return messages


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, duplicates and out-of-range allowed)."""
    bounds = sorted({min(max(p, 0), len(data)) for p in points})
    pieces = []
    previous = 0
    for bound in bounds:
        pieces.append(data[previous:bound])
        previous = bound
    pieces.append(data[previous:])
    return pieces


class FakeLineReceiver:
    """Drives ControlParser the way a Twisted LineReceiver (delimiter ``\\n``) would.

    Line mode hands over whole lines without the delimiter; when the parser
    expects content we switch to raw mode and hand over raw data; the bytes the
    parser returns after the content go back through line mode (setLineMode(extra)).
    """

    def __init__(self, parser: ControlParser | None = None) -> None:
        self.parser = parser or ControlParser()
        self.buffer = b""
        self.line_mode = True
        self.messages: list[ControlMessage] = []

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.buffer:
            if self.line_mode:
                line, delimiter, rest = self.buffer.partition(b"\n")
                if not delimiter:
                    return
                self.buffer = rest
                message = self.parser.line_received(line)
                if message is not None:
                    self.messages.append(message)
                if self.parser.content_remaining:
                    self.line_mode = False
            else:
                data, self.buffer = self.buffer, b""
                message, extra = self.parser.content_received(data)
                if message is not None:
                    self.messages.append(message)
                    self.line_mode = True
                    self.buffer = extra + self.buffer


def parse_lines(chunks: list[bytes]) -> list[ControlMessage]:
    receiver = FakeLineReceiver()
    for chunk in chunks:
        receiver.data_received(chunk)
    return receiver.messages


METAINFO_XML = (
    b'<tiaMetaInfo version="1.0">\n'
    b'\t<subject id="S\xc3\xbc" firstName="" surname=""/>\n'
    b'\t<masterSignal samplingRate="250" blockSize="1"/>\n'
    b'\t<signal type="eeg" samplingRate="250" blockSize="1" numChannels="1">\n'
    b'\t\t<channel nr="1" label="eeg1"/>\n'
    b"\t</signal>\n"
    b"</tiaMetaInfo>\n\n"
)
CUSTOM_XML = (
    b'<tiaCustomSignalInfo version="1.0"><signal type="eeg" samplingRate="250" blockSize="1"'
    b' numChannels="1" downsamplingFactor="1"><channel nr="2" label="C3"/></signal>'
    b"</tiaCustomSignalInfo>"
)


# ---------------------------------------------------------------------------
# every request and reply of SPEC section 2, parsed

REQUESTS = [
    (b"TiA 1.0\nCheckProtocolVersion\n\n", ControlMessage("CheckProtocolVersion")),
    (b"TiA 1.0\nGetMetaInfo\n\n", ControlMessage("GetMetaInfo")),
    (b"TiA 1.0\nGetDataConnection:TCP\n\n", ControlMessage("GetDataConnection", "TCP")),
    (b"TiA 1.0\nGetDataConnection:UDP\n\n", ControlMessage("GetDataConnection", "UDP")),
    (b"TiA 1.0\nStartDataTransmission\n\n", ControlMessage("StartDataTransmission")),
    (b"TiA 1.0\nStopDataTransmission\n\n", ControlMessage("StopDataTransmission")),
    (b"TiA 1.0\nGetServerStateConnection\n\n", ControlMessage("GetServerStateConnection")),
    (
        b"TiA 1.0\nSetCustomSignalInfo\nContent-Length:%d\n\n%s" % (len(CUSTOM_XML), CUSTOM_XML),
        ControlMessage("SetCustomSignalInfo", None, CUSTOM_XML),
    ),
]

REPLIES = [
    (b"TiA 1.0\nOK\n\n", ControlMessage("OK")),
    (
        b"TiA 1.0\nMetaInfo\nContent-Length:%d\n\n%s" % (len(METAINFO_XML), METAINFO_XML),
        ControlMessage("MetaInfo", None, METAINFO_XML),
    ),
    (b"TiA 1.0\nDataConnectionPort:43033\n\n", ControlMessage("DataConnectionPort", "43033")),
    (
        b"TiA 1.0\nServerStateConnectionPort:38431\n\n",
        ControlMessage("ServerStateConnectionPort", "38431"),
    ),
    (b"TiA 1.0\nServerStateRunning\n\n", ControlMessage("ServerStateRunning")),
    (b"TiA 1.0\nServerStateShutdown\n\n", ControlMessage("ServerStateShutdown")),
    (b"TiA 1.0\nError\n\n", ControlMessage("Error")),
    (b"TiA 1.0\nError -- no such thing\n\n", ControlMessage("Error", "no such thing")),
    (b"TiA 1.0\nValidationError\n\n", ControlMessage("ValidationError")),
]


@pytest.mark.parametrize(("wire", "expected"), REQUESTS + REPLIES)
def test_parse_each_request_and_reply(wire: bytes, expected: ControlMessage) -> None:
    parser = ControlParser()
    assert parser.idle
    assert parser.feed(wire) == [expected]
    assert parser.idle
    assert parser.content_remaining == 0


@pytest.mark.parametrize(("wire", "expected"), REQUESTS + REPLIES)
def test_each_request_and_reply_through_line_receiver(wire: bytes, expected: ControlMessage) -> None:
    assert parse_lines([wire]) == [expected]


@pytest.mark.parametrize(("wire", "expected"), REQUESTS + REPLIES)
def test_builder_produces_the_parsed_bytes(wire: bytes, expected: ControlMessage) -> None:
    if expected.command == Command.ERROR and expected.parameter:
        assert build_error(expected.parameter) == wire
    else:
        assert build_message(expected.command, expected.parameter, expected.content) == wire


def test_command_names() -> None:
    assert VERSION == "1.0"
    assert VERSION_LINE == "TiA 1.0"
    assert Command.CHECK_PROTOCOL_VERSION == "CheckProtocolVersion"
    assert Command.GET_METAINFO == "GetMetaInfo"
    assert Command.GET_DATA_CONNECTION == "GetDataConnection"
    assert Command.START_DATA_TRANSMISSION == "StartDataTransmission"
    assert Command.STOP_DATA_TRANSMISSION == "StopDataTransmission"
    assert Command.GET_SERVER_STATE_CONNECTION == "GetServerStateConnection"
    assert Command.SET_CUSTOM_SIGNAL_INFO == "SetCustomSignalInfo"
    assert Command.OK == "OK"
    assert Command.ERROR == "Error"
    assert Command.VALIDATION_ERROR == "ValidationError"
    assert Command.METAINFO == "MetaInfo"
    assert Command.DATA_CONNECTION_PORT == "DataConnectionPort"
    assert Command.SERVER_STATE_CONNECTION_PORT == "ServerStateConnectionPort"
    assert Command.SERVER_STATE_RUNNING == "ServerStateRunning"
    assert Command.SERVER_STATE_SHUTDOWN == "ServerStateShutdown"


def test_control_message_defaults() -> None:
    message = ControlMessage("OK")
    assert message.parameter is None
    assert message.content == b""
    assert not message.is_error
    with pytest.raises(AttributeError):
        message.command = "x"  # type: ignore[misc]  # frozen: what is under test


# ---------------------------------------------------------------------------
# liberal parsing

GET_TCP = ControlMessage("GetDataConnection", "TCP")


@pytest.mark.parametrize(
    "wire",
    [
        b"TiA 1.0\nGetDataConnection:TCP\n\n",
        b"TiA 1.0\nGetDataConnection: TCP\n\n",
        b"TiA 1.0\nGetDataConnection:TCP \n\n",
        b"TiA 1.0\nGetDataConnection :TCP\n\n",
        b"TiA 1.0\nGetDataConnection \t:\t TCP\t \n\n",
        b"TiA 1.0\n  GetDataConnection:TCP\n\n",
        b"TiA 1.0\r\nGetDataConnection:TCP\r\n\r\n",
        b" TiA 1.0 \nGetDataConnection:TCP\n\n",
        b"\tTiA 1.0\t\r\n\tGetDataConnection : TCP\r\n \t\r\n",
        b"TiA 1.0\nGetDataConnection:TCP\r\r\n\n",
    ],
)
def test_spaces_tabs_and_cr_are_trimmed(wire: bytes) -> None:
    assert parse(wire) == [GET_TCP]
    assert parse_lines([wire]) == [GET_TCP]


@pytest.mark.parametrize(
    "header",
    [
        b"Content-Length:4",
        b"Content-Length: 4",
        b"Content-Length :4",
        b" Content-Length\t:\t4 \r",
        b"content-length:4",
        b"CONTENT-LENGTH:4",
        b"Content-Length:0004",
    ],
)
def test_content_length_header_variants(header: bytes) -> None:
    wire = b"TiA 1.0\nMetaInfo\n" + header + b"\n\n<a/>"
    assert parse(wire) == [ControlMessage("MetaInfo", None, b"<a/>")]
    assert parse_lines([wire]) == [ControlMessage("MetaInfo", None, b"<a/>")]


def test_content_length_zero_means_no_content() -> None:
    assert parse(b"TiA 1.0\nOK\nContent-Length:0\n\n") == [ControlMessage("OK")]
    assert parse(b"TiA 1.0\nOK\nContent-Length:0\n\nTiA 1.0\nOK\n\n") == [ControlMessage("OK")] * 2


def test_parameter_keeps_its_case_and_later_colons() -> None:
    assert parse(b"TiA 1.0\nGetDataConnection:tcp\n\n") == [ControlMessage("GetDataConnection", "tcp")]
    assert parse(b"TiA 1.0\nFoo:a:b: c\n\n") == [ControlMessage("Foo", "a:b: c")]
    assert parse(b"TiA 1.0\nFoo : a : b \n\n") == [ControlMessage("Foo", "a : b")]


def test_missing_and_empty_parameter_differ() -> None:
    assert parse(b"TiA 1.0\nGetDataConnection\n\n") == [ControlMessage("GetDataConnection")]
    assert parse(b"TiA 1.0\nGetDataConnection:\n\n") == [ControlMessage("GetDataConnection", "")]
    assert parse(b"TiA 1.0\nGetDataConnection: \t\n\n") == [ControlMessage("GetDataConnection", "")]


def test_commands_are_case_sensitive_and_unknown_commands_parse() -> None:
    # The parser does not judge commands: the server answers unknown ones with Error.
    assert parse(b"TiA 1.0\nFooBar\n\n") == [ControlMessage("FooBar")]
    assert parse(b"TiA 1.0\ngetmetainfo\n\n") == [ControlMessage("getmetainfo")]


def test_blank_lines_between_and_before_messages() -> None:
    wire = (
        b"\n\r\n \t\n"
        + b"TiA 1.0\nOK\n\n"
        + b"\n\n\r\n"
        + b"TiA 1.0\nGetMetaInfo\n\n"
        + b" \n"
        + b"TiA 1.0\nMetaInfo\nContent-Length:3\n\nabc"
        + b"\n\n"
    )
    expected = [
        ControlMessage("OK"),
        ControlMessage("GetMetaInfo"),
        ControlMessage("MetaInfo", None, b"abc"),
    ]
    parser = ControlParser()
    assert parser.feed(wire) == expected
    assert parser.idle
    assert parse_lines([wire]) == expected


def test_only_blank_lines_yield_nothing() -> None:
    parser = ControlParser()
    assert parser.feed(b"\n" * 5000 + b"\r\n" * 100) == []
    assert parser.idle


def test_many_blank_lines_in_one_chunk_are_linear() -> None:
    # A million blank lines used to cost quadratic time (the rest of the chunk
    # was copied after every line). Now this completes at once.
    parser = ControlParser()
    assert parser.feed(b"\n" * 1_000_000 + b"TiA 1.0\nOK\n\n") == [ControlMessage("OK")]


ALL_MESSAGES = b"".join(wire for wire, _ in REQUESTS + REPLIES)
ALL_EXPECTED = [message for _, message in REQUESTS + REPLIES]


def test_several_messages_in_one_chunk() -> None:
    assert parse(ALL_MESSAGES) == ALL_EXPECTED
    assert parse(OK_REPLY * 1000) == [ControlMessage("OK")] * 1000


def test_many_messages_byte_by_byte() -> None:
    parser = ControlParser()
    assert parse_bytewise(ALL_MESSAGES, parser) == ALL_EXPECTED
    assert parser.idle


def test_many_messages_byte_by_byte_through_line_receiver() -> None:
    chunks = [ALL_MESSAGES[i : i + 1] for i in range(len(ALL_MESSAGES))]
    assert parse_lines(chunks) == ALL_EXPECTED


@pytest.mark.parametrize(("wire", "expected"), REQUESTS + REPLIES)
def test_split_at_every_byte_boundary(wire: bytes, expected: ControlMessage) -> None:
    for split in range(len(wire) + 1):
        parser = ControlParser()
        first = parser.feed(wire[:split])
        second = parser.feed(wire[split:])
        assert first + second == [expected], split
        # A complete message is returned by the chunk that completes it.
        assert (first == [expected]) == (split == len(wire)), split
        assert parser.idle
        assert parse_lines([wire[:split], wire[split:]]) == [expected], split


def test_split_at_every_pair_of_boundaries_with_content() -> None:
    wire = REQUESTS[-1][0] + b"TiA 1.0\nOK\n\n"
    expected = [REQUESTS[-1][1], ControlMessage("OK")]
    for first in range(0, len(wire) + 1, 3):
        for second in range(first, len(wire) + 1, 5):
            chunks = cut(wire, [first, second])
            assert parse_chunks(chunks) == expected
            assert parse_lines(chunks) == expected


def test_idle_and_content_remaining_track_progress() -> None:
    parser = ControlParser()
    assert parser.idle
    parser.feed(b"TiA")
    assert not parser.idle
    parser.feed(b" 1.0\n")
    assert not parser.idle
    parser.feed(b"MetaInfo\nContent-Length:5\n")
    assert parser.content_remaining == 0
    parser.feed(b"\n")
    assert parser.content_remaining == 5
    assert parser.feed(b"ab") == []
    assert parser.content_remaining == 3
    assert parser.feed(b"cdeTiA") == [ControlMessage("MetaInfo", None, b"abcde")]
    assert parser.content_remaining == 0
    assert not parser.idle
    assert parser.feed(b" 1.0\nOK\n\n") == [ControlMessage("OK")]
    assert parser.idle


# ---------------------------------------------------------------------------
# content


def test_content_length_counts_bytes_not_characters() -> None:
    text = '<a label="\u00fc\u20ac\U0001f600"/>'
    content = text.encode("utf-8")
    assert len(content) > len(text)
    wire = build_message("MetaInfo", None, content)
    assert b"Content-Length:%d\n" % len(content) in wire
    assert parse(wire) == [ControlMessage("MetaInfo", None, content)]
    assert parse(wire + OK_REPLY) == [
        ControlMessage("MetaInfo", None, content),
        ControlMessage("OK"),
    ]
    assert parse_bytewise(wire + OK_REPLY) == [
        ControlMessage("MetaInfo", None, content),
        ControlMessage("OK"),
    ]


def test_content_is_taken_byte_exact_even_if_it_looks_like_framing() -> None:
    content = b"\n\nTiA 1.0\nOK\n\n\r\n\xff\xfe\x00 binary, not UTF-8"
    wire = build_message("SetCustomSignalInfo", None, content) + OK_REPLY
    expected = [ControlMessage("SetCustomSignalInfo", None, content), ControlMessage("OK")]
    assert parse(wire) == expected
    assert parse_bytewise(wire) == expected
    assert parse_lines([wire]) == expected


def test_content_received_like_a_line_receiver() -> None:
    parser = ControlParser()
    assert parser.line_received(b"TiA 1.0") is None
    assert parser.line_received(b"MetaInfo\r") is None
    assert parser.line_received(b"Content-Length: 10") is None
    assert parser.content_remaining == 0
    assert parser.line_received(b"") is None
    assert parser.content_remaining == 10
    assert parser.content_received(b"0123") == (None, b"")
    assert parser.content_remaining == 6
    assert parser.content_received(b"45") == (None, b"")
    assert parser.content_remaining == 4
    message, rest = parser.content_received(b"6789TiA 1.0\nOK\n\n")
    assert message == ControlMessage("MetaInfo", None, b"0123456789")
    assert rest == b"TiA 1.0\nOK\n\n"
    assert parser.content_remaining == 0
    # Back in line mode; the rest goes through the lines again.
    assert parser.line_received(b"TiA 1.0") is None
    assert parser.line_received(b"OK") is None
    assert parser.line_received(b"") == ControlMessage("OK")
    assert parser.idle


def test_content_received_exactly_the_content() -> None:
    parser = ControlParser()
    for line in (b"TiA 1.0", b"X", b"Content-Length:3", b""):
        assert parser.line_received(line) is None
    assert parser.content_received(b"abc") == (ControlMessage("X", None, b"abc"), b"")


def test_line_received_returns_message_on_empty_line() -> None:
    parser = ControlParser()
    assert parser.line_received(b"") is None  # blank line between messages
    assert parser.line_received(b"TiA 1.0\r") is None
    assert parser.line_received(b"StartDataTransmission") is None
    assert parser.line_received(b"\r") == ControlMessage("StartDataTransmission")


def test_api_misuse_is_a_runtime_error() -> None:
    parser = ControlParser()
    with pytest.raises(RuntimeError):
        parser.content_received(b"abc")
    for line in (b"TiA 1.0", b"X", b"Content-Length:3", b""):
        parser.line_received(line)
    with pytest.raises(RuntimeError):
        parser.line_received(b"TiA 1.0")


# ---------------------------------------------------------------------------
# error replies


@pytest.mark.parametrize(
    ("wire", "text"),
    [
        (b"TiA 1.0\nError\n\n", "Error"),
        (b"TiA 1.0\nError -- Unknown command\n\n", "Unknown command"),
        (b"TiA 1.0\nError --Unknown command \n\n", "Unknown command"),
        (b"TiA 1.0\nError--x\n\n", "x"),
        (b"TiA 1.0\nError\t--\tx\n\n", "x"),
        (b"TiA 1.0\nError -- \n\n", "Error"),
        (
            b"TiA 1.0\nError -- Target and remote subnet do not match!\n\n",
            "Target and remote subnet do not match!",
        ),
        (
            b"TiA 1.0\nError -- Details:This connection already has a custom config\n\n",
            "Details:This connection already has a custom config",
        ),
        (b"TiA 1.0\nError -- a: b: c\n\n", "a: b: c"),
        (b"TiA 1.0\nError:something\n\n", "something"),
    ],
)
def test_error_reply_text_forms(wire: bytes, text: str) -> None:
    [message] = parse(wire)
    assert message.command == Command.ERROR
    assert message.is_error
    assert message.error_text() == text


def test_error_reply_with_text_containing_colon_keeps_it_in_parameter() -> None:
    [message] = parse(b"TiA 1.0\nError -- Details:bad thing\n\n")
    assert message == ControlMessage("Error", "Details:bad thing")


def test_error_reply_with_tia_error_content() -> None:
    content = b'<tiaError version="1.0" description="channel nr 9: out of range &amp; &quot;bad&quot;"/>'
    wire = b"TiA 1.0\nError\nContent-Length:%d\n\n%s" % (len(content), content)
    [message] = parse(wire)
    assert message == ControlMessage("Error", None, content)
    assert message.is_error
    assert message.error_text() == 'channel nr 9: out of range & "bad"'
    assert parse_bytewise(wire) == [message]


def test_error_reply_with_xml_declaration_content() -> None:
    content = b'<?xml version="1.0" encoding="UTF-8"?>\n<tiaError version="1.0" description="x"/>\n'
    [message] = parse(build_message("Error", None, content))
    assert message.error_text() == "x"


def test_validation_error_reference_form_carries_plain_text_content() -> None:
    # libtia sends ValidationError with the exception text as content.
    content = b"Channel nr 5 exceeds the 4 channels of eeg\n"
    [message] = parse(build_message("ValidationError", None, content))
    assert message.command == Command.VALIDATION_ERROR
    assert message.is_error
    assert message.error_text() == "Channel nr 5 exceeds the 4 channels of eeg"


def test_validation_error_without_content() -> None:
    [message] = parse(b"TiA 1.0\nValidationError\n\n")
    assert message.is_error
    assert message.error_text() == "ValidationError"


@pytest.mark.parametrize(
    "content",
    [
        b'<tiaError version="1.0"/>',
        b"<tiaError",
        b'<?xml version="1.0" encoding="no-such-codec"?><tiaError description="x"/>',
        b'<!DOCTYPE x [<!ENTITY a "b">]><tiaError description="&a;"/>',
        b"\xff\xfe\xfd",
    ],
)
def test_error_text_never_raises_on_odd_content(content: bytes) -> None:
    [message] = parse(build_message("Error", None, content))
    text = message.error_text()
    assert isinstance(text, str)
    assert text


@pytest.mark.parametrize("command", ["OK", "Errors", "ErrorX", "ErrorCode", "error", "MetaInfo", "ValidationErrors"])
def test_is_error_only_for_error_commands(command: str) -> None:
    [message] = parse(build_message(command))
    assert message.command == command
    assert not message.is_error
    assert message.error_text() == command


# ---------------------------------------------------------------------------
# builders: exact bytes (SPEC section 7)


def test_builder_exact_bytes() -> None:
    assert build_message("OK") == b"TiA 1.0\nOK\n\n"
    assert OK_REPLY == b"TiA 1.0\nOK\n\n"
    assert build_message("CheckProtocolVersion") == b"TiA 1.0\nCheckProtocolVersion\n\n"
    assert build_message("GetMetaInfo") == b"TiA 1.0\nGetMetaInfo\n\n"
    assert build_message("GetDataConnection", "TCP") == b"TiA 1.0\nGetDataConnection:TCP\n\n"
    assert build_message("DataConnectionPort", "43033") == b"TiA 1.0\nDataConnectionPort:43033\n\n"
    assert build_message("DataConnectionPort", str(50123)) == (b"TiA 1.0\nDataConnectionPort:50123\n\n")
    assert build_message("ServerStateConnectionPort", "38431") == (b"TiA 1.0\nServerStateConnectionPort:38431\n\n")
    assert SERVER_STATE_RUNNING == b"TiA 1.0\nServerStateRunning\n\n"
    assert SERVER_STATE_SHUTDOWN == b"TiA 1.0\nServerStateShutdown\n\n"
    assert build_message("FooBar", "") == b"TiA 1.0\nFooBar:\n\n"


def test_builder_metainfo_with_content_length() -> None:
    wire = build_message("MetaInfo", None, METAINFO_XML)
    head = b"TiA 1.0\nMetaInfo\nContent-Length:%d\n\n" % len(METAINFO_XML)
    assert wire == head + METAINFO_XML
    assert len(METAINFO_XML) == len(METAINFO_XML.decode("utf-8")) + 1  # the u-umlaut
    # pytiaclient: version line, command line, one byte, Content-Length line, n + 1 bytes.
    lines = wire.split(b"\n", 3)
    assert lines[0] == b"TiA 1.0"
    assert lines[1] == b"MetaInfo"
    assert lines[2] == b"Content-Length:%d" % len(METAINFO_XML)
    assert lines[3] == b"\n" + METAINFO_XML
    assert METAINFO_XML.endswith(b"\n\n")


def test_builder_content_is_appended_byte_exact() -> None:
    content = b"\x00\xff\n\r\n"
    assert build_message("X", "y", content) == b"TiA 1.0\nX:y\nContent-Length:5\n\n" + content


@pytest.mark.parametrize(
    ("command", "parameter"),
    [("OK\n", None), ("A\nB", None), ("GetDataConnection", "TCP\n"), ("X", "a\nb")],
)
def test_builder_refuses_newlines(command: str, parameter: str | None) -> None:
    with pytest.raises(ValueError):
        build_message(command, parameter)


def test_build_error_forms() -> None:
    assert build_error() == b"TiA 1.0\nError\n\n"
    assert build_error(None) == b"TiA 1.0\nError\n\n"
    assert build_error("unknown command 'FooBar'") == b"TiA 1.0\nError -- unknown command 'FooBar'\n\n"
    assert build_error("wrong version line: TiA 2.0") == (b"TiA 1.0\nError -- wrong version line: TiA 2.0\n\n")
    assert build_error("\u00fcber") == "TiA 1.0\nError -- \u00fcber\n\n".encode()


def test_build_error_flattens_newlines_and_whitespace() -> None:
    assert build_error("first line\nsecond line") == b"TiA 1.0\nError -- first line second line\n\n"
    assert build_error("  a\r\n\tb  \n\n c \x0b\x0c d\n") == b"TiA 1.0\nError -- a b c d\n\n"
    assert build_error("x\u2028y\x85z") == b"TiA 1.0\nError -- x y z\n\n"


@pytest.mark.parametrize("reason", ["", " ", "\n", "\r\n\t "])
def test_build_error_with_blank_reason_is_plain_error(reason: str) -> None:
    assert build_error(reason) == b"TiA 1.0\nError\n\n"


@pytest.mark.parametrize("reason", ["x", "bad: thing", "a\nb", "Details:x -- y", "  spaced  out  "])
def test_build_error_parses_back(reason: str) -> None:
    [message] = parse(build_error(reason))
    assert message.is_error
    assert message.error_text() == " ".join(reason.split())


# ---------------------------------------------------------------------------
# malformed input: ControlProtocolError, never a hang


@pytest.mark.parametrize(
    "wire",
    [
        b"TiA 2.0\nOK\n\n",
        b"TiA 1.1\n",
        b"TiA 1.0.0\n",
        b"TiA1.0\n",
        b"TiA  1.0\n",
        b"tia 1.0\n",
        b"TIA 1.0\n",
        b"garbage\n",
        b"GET / HTTP/1.1\r\n",
        b"CheckProtocolVersion\n\n",
        b"OK\n",
    ],
)
def test_wrong_version_line(wire: bytes) -> None:
    with pytest.raises(ControlProtocolError, match="version"):
        parse(wire)
    with pytest.raises(ControlProtocolError):
        parse_bytewise(wire)
    with pytest.raises(ControlProtocolError):
        parse_lines([wire])


def test_wrong_version_line_after_a_good_message() -> None:
    parser = ControlParser()
    assert parser.feed(OK_REPLY) == [ControlMessage("OK")]
    with pytest.raises(ControlProtocolError):
        parser.feed(b"TiA 2.0\n")


@pytest.mark.parametrize("wire", [b"TiA 1.0\n\n", b"TiA 1.0\n \t\r\n", b"TiA 1.0\r\n\r\n"])
def test_empty_command_line(wire: bytes) -> None:
    with pytest.raises(ControlProtocolError, match="command"):
        parse(wire)
    with pytest.raises(ControlProtocolError):
        parse_lines([wire])


@pytest.mark.parametrize(
    "line",
    [
        b"Foo:bar",
        b"Content-Type:text/xml",
        b"Content-Length",
        b"Content-Length 5",
        b"ContentLength:5",
        b"Content - Length:5",
        b"TiA 1.0",
        b"OK",
    ],
)
def test_third_header_line_that_is_not_content_length(line: bytes) -> None:
    wire = b"TiA 1.0\nOK\n" + line + b"\n\n"
    with pytest.raises(ControlProtocolError, match="header"):
        parse(wire)
    with pytest.raises(ControlProtocolError):
        parse_lines([wire])


def test_duplicate_content_length() -> None:
    for second in (b"Content-Length:3", b"Content-Length:4", b"content-length: 3"):
        wire = b"TiA 1.0\nMetaInfo\nContent-Length:3\n" + second + b"\n\nabc"
        with pytest.raises(ControlProtocolError, match="twice"):
            parse(wire)


@pytest.mark.parametrize(
    "value",
    [
        b"-1",
        b"-0",
        b"+5",
        b"abc",
        b"5a",
        b"0x10",
        b"1.5",
        b"1e3",
        b"1 2",
        b"",
        b"\xef\xbc\x91\xef\xbc\x92",  # fullwidth digits: str.isdigit() is true for them
        b"\xc2\xb2",  # superscript two
        b"\xd9\xa3",  # arabic-indic three
        b"1_000",
    ],
)
def test_invalid_content_length(value: bytes) -> None:
    wire = b"TiA 1.0\nMetaInfo\nContent-Length:" + value + b"\n\n"
    with pytest.raises(ControlProtocolError, match="Content-Length"):
        parse(wire)


def test_content_length_above_the_limit() -> None:
    parser = ControlParser(max_content_length=100)
    assert parser.feed(b"TiA 1.0\nX\nContent-Length:100\n\n" + b"a" * 100) == [ControlMessage("X", None, b"a" * 100)]
    with pytest.raises(ControlProtocolError, match="exceeds"):
        parser.feed(b"TiA 1.0\nX\nContent-Length:101\n")


@pytest.mark.parametrize(
    "value",
    [
        str(DEFAULT_MAX_CONTENT_LENGTH + 1).encode(),
        b"4294967296",
        b"99999999999999999999999999999999",
        b"9" * 1000,
    ],
)
def test_huge_content_length_default_limit(value: bytes) -> None:
    with pytest.raises(ControlProtocolError, match="exceeds"):
        parse(b"TiA 1.0\nMetaInfo\nContent-Length:" + value + b"\n\n")


def test_content_length_at_the_default_limit_is_accepted() -> None:
    parser = ControlParser()
    parser.feed(b"TiA 1.0\nMetaInfo\nContent-Length:%d\n\n" % DEFAULT_MAX_CONTENT_LENGTH)
    assert parser.content_remaining == DEFAULT_MAX_CONTENT_LENGTH


def test_content_length_with_more_digits_than_int_accepts() -> None:
    # int() refuses more than 4300 digits with a bare ValueError; the parser
    # must still answer with ControlProtocolError when its lines are that long.
    parser = ControlParser(max_line_length=20_000)
    with pytest.raises(ControlProtocolError, match="exceeds"):
        parser.feed(b"TiA 1.0\nMetaInfo\nContent-Length:" + b"9" * 10_000 + b"\n\n")


def test_content_length_with_many_leading_zeros() -> None:
    parser = ControlParser(max_line_length=20_000, max_content_length=10)
    assert parser.feed(b"TiA 1.0\nX\nContent-Length:" + b"0" * 10_000 + b"3\n\nabc") == [
        ControlMessage("X", None, b"abc")
    ]


def test_long_line_through_feed_without_newline() -> None:
    parser = ControlParser(max_line_length=64)
    assert parser.feed(b"A" * 64) == []  # exactly the bound: still waiting
    with pytest.raises(ControlProtocolError, match="longer"):
        parser.feed(b"A")


def test_long_line_through_feed_in_one_chunk() -> None:
    with pytest.raises(ControlProtocolError, match="longer"):
        ControlParser().feed(b"x" * (DEFAULT_MAX_LINE_LENGTH + 1))
    with pytest.raises(ControlProtocolError, match="longer"):
        ControlParser().feed(b"x" * 10_000_000)


def test_long_line_through_feed_byte_by_byte_stops_at_the_bound() -> None:
    parser = ControlParser(max_line_length=32)
    for _ in range(32):
        assert parser.feed(b"y") == []
    with pytest.raises(ControlProtocolError):
        parser.feed(b"y")


@pytest.mark.parametrize("state_prefix", [b"", b"TiA 1.0\n", b"TiA 1.0\nOK\n"])
def test_long_line_with_newline_in_every_state(state_prefix: bytes) -> None:
    parser = ControlParser(max_line_length=40)
    parser.feed(state_prefix)
    with pytest.raises(ControlProtocolError, match="longer"):
        parser.feed(b"Z" * 41 + b"\n")


def test_line_at_the_bound_is_accepted() -> None:
    parser = ControlParser(max_line_length=20)
    command = b"C" * 20
    assert parser.feed(b"TiA 1.0\n" + command + b"\n\n") == [ControlMessage("C" * 20)]


def test_long_line_through_line_received() -> None:
    parser = ControlParser(max_line_length=16)
    assert parser.line_received(b"TiA 1.0" + b" " * 9) is None  # 16 bytes: fine
    with pytest.raises(ControlProtocolError, match="longer"):
        parser.line_received(b"G" * 17)
    with pytest.raises(ControlProtocolError, match="longer"):
        ControlParser().line_received(b"G" * (DEFAULT_MAX_LINE_LENGTH + 1))


def test_content_is_not_limited_by_line_length() -> None:
    parser = ControlParser(max_line_length=24, max_content_length=100_000)
    content = b"x" * 50_000
    assert parser.feed(b"TiA 1.0\nX\nContent-Length:50000\n\n" + content) == [ControlMessage("X", None, content)]


@pytest.mark.parametrize(
    "wire",
    [
        b"\xffTiA 1.0\n",
        b"TiA 1.0\xc3\n",
        b"TiA 1.0\n\xff\xfe\n",
        b"TiA 1.0\nOK\xed\xa0\x80\n\n",  # an encoded surrogate
        b"TiA 1.0\nGetDataConnection:\xc0\xaf\n\n",  # overlong encoding
        b"TiA 1.0\nMetaInfo\nContent-Length:\xff\n\n",
    ],
)
def test_invalid_utf8(wire: bytes) -> None:
    with pytest.raises(ControlProtocolError, match="UTF-8"):
        parse(wire)
    with pytest.raises(ControlProtocolError, match="UTF-8"):
        parse_lines([wire])


def test_utf8_command_and_parameter_are_decoded() -> None:
    wire = "TiA 1.0\nK\u00f6mmand:\u20ac\U0001f600\n\n".encode()
    assert parse(wire) == [ControlMessage("K\u00f6mmand", "\u20ac\U0001f600")]


@pytest.mark.parametrize(
    "garbage",
    [
        bytes(range(256)) * 4,
        # data packets sent to the control port: no newline, so the line bound ends it
        (b"\x03\x35\x00\x00\x00\x01\x00\x00\x00" + b"\x00" * 24 + b"\x04\x00\x01\x00") * 60,
        b"\x00" * 5000,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\xaa" * 2000,  # a TLS hello
    ],
)
def test_binary_garbage(garbage: bytes) -> None:
    with pytest.raises(ControlProtocolError):
        parse(garbage)
    with pytest.raises(ControlProtocolError):
        parse_bytewise(garbage)


def test_error_is_a_plain_exception_with_a_message() -> None:
    with pytest.raises(ControlProtocolError) as info:
        parse(b"TiA 2.0\n")
    assert "TiA 2.0" in str(info.value)
    assert "TiA 1.0" in str(info.value)


# ---------------------------------------------------------------------------
# property tests

_TRIMMED = " \t\r"
_line_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\n"), max_size=30)
_commands = _line_text.filter(
    lambda c: (
        bool(c)
        and ":" not in c
        and c == c.strip(_TRIMMED)
        # "Error" followed by a space, tab or dash is the "Error -- text" form.
        and not (c.startswith("Error") and len(c) > 5 and c[5] in " \t-")
    )
)
_parameters = st.none() | _line_text.filter(lambda p: p == p.strip(_TRIMMED))
_contents = st.binary(max_size=200)
_messages = st.builds(ControlMessage, _commands, _parameters, _contents)


@settings(max_examples=200, deadline=None)
@given(_messages)
def test_build_parse_round_trip(message: ControlMessage) -> None:
    wire = build_message(message.command, message.parameter, message.content)
    assert wire.startswith(b"TiA 1.0\n")
    parser = ControlParser()
    assert parser.feed(wire) == [message]
    assert parser.idle
    assert parse_lines([wire]) == [message]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_messages, min_size=1, max_size=5),
    st.lists(st.sampled_from([b"", b"\n", b"\r\n", b" \t\n"]), min_size=5, max_size=5),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_arbitrary_chunking_gives_the_same_messages(
    messages: list[ControlMessage], separators: list[bytes], points: list[int]
) -> None:
    wire = b"".join(
        separator + build_message(m.command, m.parameter, m.content)
        for m, separator in zip(messages, separators, strict=False)
    )
    chunks = cut(wire, points)
    assert b"".join(chunks) == wire
    parser = ControlParser()
    assert parse_chunks(chunks, parser) == messages
    assert parser.idle
    assert parse_lines(chunks) == messages


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_build_error_round_trip(reason: str) -> None:
    [message] = parse(build_error(reason))
    assert message.is_error
    flat = " ".join(reason.split())
    assert message.error_text() == (flat or "Error")
    assert message.parameter == (flat or None)


def _feed_expecting_only_protocol_errors(parser: ControlParser, chunks: list[bytes]) -> None:
    try:
        for chunk in chunks:
            for message in parser.feed(chunk):
                assert isinstance(message, ControlMessage)
                assert isinstance(message.command, str) and message.command
                assert len(message.content) <= parser.max_content_length
    except ControlProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_fuzz_arbitrary_bytes(data: bytes, points: list[int]) -> None:
    _feed_expecting_only_protocol_errors(ControlParser(), cut(data, points))
    _feed_expecting_only_protocol_errors(ControlParser(max_line_length=8, max_content_length=8), cut(data, points))


_fragments = st.sampled_from(
    [
        b"TiA 1.0\n",
        b"TiA 2.0\n",
        b"\n",
        b"\r\n",
        b" ",
        b":",
        b"Error -- ",
        b"OK\n",
        b"GetDataConnection:TCP\n",
        b"Content-Length:",
        b"Content-Length:3\n",
        b"Content-Length:-1\n",
        b"Content-Length:99999999999\n",
        b"3",
        b"\xff",
        b"\xc3",
        b"abc",
        b"\x00",
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_fragments | st.binary(max_size=8), max_size=30),
    st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_fuzz_protocol_like_bytes(fragments: list[bytes], points: list[int]) -> None:
    data = b"".join(fragments)
    _feed_expecting_only_protocol_errors(ControlParser(), cut(data, points))
    receiver = FakeLineReceiver(ControlParser(max_line_length=30, max_content_length=5))
    try:
        for chunk in cut(data, points):
            receiver.data_received(chunk)
    except ControlProtocolError:
        pass


def test_feed_error_keeps_the_messages_before_it() -> None:
    parser = ControlParser()
    with pytest.raises(ControlProtocolError) as info:
        parser.feed(b"TiA 1.0\nOK\n\nTiA 1.0\nGetMetaInfo\n\nTiA 2.0\n")
    assert [m.command for m in info.value.messages] == ["OK", "GetMetaInfo"]
