"""TiA 1.0 control messages: an incremental parser and the builders.

A message is a version line, a command line, an optional ``Content-Length``
line, an empty line, then that many bytes of content (SPEC section 2). The
parser is liberal (spaces, tabs and ``\\r`` trimmed, blank lines between
messages skipped); the builders emit exactly the reference's bytes.

The parser works on two levels so that both transports share it: a Twisted
``LineReceiver`` hands it whole lines and raw content (``line_received``,
``content_received``), a socket client hands it arbitrary chunks (``feed``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VERSION = "1.0"
VERSION_LINE = "TiA " + VERSION
_VERSION_PREFIX = (VERSION_LINE + "\n").encode()

DEFAULT_MAX_LINE_LENGTH = 1024
DEFAULT_MAX_CONTENT_LENGTH = 1 << 20

_TRIM = " \t\r"
# Between messages every line is trimmed and blank ones skipped, so leading whitespace of
# any kind can go at C speed: a flood of empty lines costs nothing per line.
_LEADING_BLANKS = re.compile(rb"[ \t\r\n]+")


class Command:
    """Command names of requests and replies, as they appear on the wire."""

    CHECK_PROTOCOL_VERSION = "CheckProtocolVersion"
    GET_METAINFO = "GetMetaInfo"
    GET_DATA_CONNECTION = "GetDataConnection"
    START_DATA_TRANSMISSION = "StartDataTransmission"
    STOP_DATA_TRANSMISSION = "StopDataTransmission"
    GET_SERVER_STATE_CONNECTION = "GetServerStateConnection"
    SET_CUSTOM_SIGNAL_INFO = "SetCustomSignalInfo"

    OK = "OK"
    ERROR = "Error"
    VALIDATION_ERROR = "ValidationError"
    METAINFO = "MetaInfo"
    DATA_CONNECTION_PORT = "DataConnectionPort"
    SERVER_STATE_CONNECTION_PORT = "ServerStateConnectionPort"
    SERVER_STATE_RUNNING = "ServerStateRunning"
    SERVER_STATE_SHUTDOWN = "ServerStateShutdown"


# txtia's recording control, an extension of the control channel (a client that
# never sends these never sees them). StartRecording and StopRecording are answered
# OK or ``Error -- <reason>``; GetRecordingState with ``RecordingState:<state>`` and
# the state as a JSON document in the content.
START_RECORDING = "StartRecording"
STOP_RECORDING = "StopRecording"
GET_RECORDING_STATE = "GetRecordingState"
RECORDING_STATE = "RecordingState"

# txtia's status, an extension too: GetServerStatus is answered ``ServerStatus`` with the
# daemon's state (packet rate, ticks, clients, each source's health) as a JSON document,
# the same as the web monitor's /status. Other servers answer Error: a client asks once.
GET_SERVER_STATUS = "GetServerStatus"
SERVER_STATUS = "ServerStatus"


class ControlProtocolError(Exception):
    """The byte stream is not TiA 1.0 control framing; the connection cannot go on.

    Raised by ``ControlParser.feed``, ``messages`` holds the messages completed
    before the violation in the same chunk, so the caller can still answer them.
    """

    messages: list[ControlMessage]

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.messages = []


@dataclass(frozen=True)
class ControlMessage:
    """One request or reply. ``parameter`` is the text after the first ``:``, if any."""

    command: str
    parameter: str | None = None
    content: bytes = b""

    @property
    def is_error(self) -> bool:
        return self.command in (Command.ERROR, Command.VALIDATION_ERROR)

    def error_text(self) -> str:
        """The human-readable reason of an error reply, from whichever form it came in."""
        if self.parameter:
            return self.parameter
        if self.content:
            from tia.protocol.xmlsafe import parse_xml

            try:
                root = parse_xml(self.content)
            except ValueError:
                return self.content.decode("utf-8", "replace").strip()
            description = root.get("description")
            if description:
                return description
        return self.command


def build_message(command: str, parameter: str | None = None, content: bytes = b"") -> bytes:
    """The exact bytes of a message: no spaces around ``:``, one empty line, content as is."""
    line = command if parameter is None else f"{command}:{parameter}"
    if "\n" in line:
        raise ValueError(f"a control line cannot contain a newline: {line!r}")
    head = _VERSION_PREFIX + line.encode("utf-8") + b"\n"
    if content:
        head += b"Content-Length:%d\n" % len(content)
    return head + b"\n" + content


def build_error(reason: str | None = None) -> bytes:
    """An error reply in the reference's form: ``Error`` or ``Error -- <reason>``."""
    if reason is None:
        return build_message(Command.ERROR)
    flat = " ".join(reason.split())
    if not flat:
        return build_message(Command.ERROR)
    return build_message(f"{Command.ERROR} -- {flat}")


OK_REPLY = build_message(Command.OK)
SERVER_STATE_RUNNING = build_message(Command.SERVER_STATE_RUNNING)
SERVER_STATE_SHUTDOWN = build_message(Command.SERVER_STATE_SHUTDOWN)


def _parse_command_line(text: str) -> tuple[str, str | None]:
    if text.startswith(Command.ERROR) and (len(text) == 5 or text[5] in " \t-"):
        reason = text[5:].strip(_TRIM)
        if reason.startswith("--"):
            reason = reason[2:].strip(_TRIM)
        return Command.ERROR, reason or None
    command, colon, parameter = text.partition(":")
    if not colon:
        return command.strip(_TRIM), None
    return command.strip(_TRIM), parameter.strip(_TRIM)


class ControlParser:
    """Incremental parser of control messages (requests or replies).

    Every input is bounded: a line longer than ``max_line_length`` or a
    ``Content-Length`` above ``max_content_length`` raises
    ``ControlProtocolError`` before anything is buffered beyond the bound.
    """

    _VERSION, _COMMAND, _HEADERS, _CONTENT = range(4)

    def __init__(
        self,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH,
    ) -> None:
        self.max_line_length = max_line_length
        self.max_content_length = max_content_length
        self._state = self._VERSION
        self._command = ""
        self._parameter: str | None = None
        self._content_length: int | None = None
        self._content: list[bytes] = []
        self._content_remaining = 0
        self._buffer = b""

    @property
    def content_remaining(self) -> int:
        """Bytes of content still expected; non-zero means: hand me raw bytes."""
        return self._content_remaining if self._state == self._CONTENT else 0

    @property
    def idle(self) -> bool:
        """True between messages (nothing partial buffered)."""
        return self._state == self._VERSION and not self._buffer

    def skip_blanks(self, data: bytes, start: int = 0) -> int:
        """Where the next line starts in ``data`` from ``start``: past any blank lines and white
        space between messages, which peers send and which mean nothing (``start`` itself
        inside a message). One regex step, so a flood of blank lines costs linear time."""
        if self._state != self._VERSION:
            return start
        blanks = _LEADING_BLANKS.match(data, start)
        return start if blanks is None else blanks.end()

    def line_received(self, raw_line: bytes) -> ControlMessage | None:
        """Take one line (without its ``\\n``); return a message when it completes one."""
        if self._state == self._CONTENT:
            raise RuntimeError("content expected, not a line")
        if len(raw_line) > self.max_line_length:
            raise ControlProtocolError(
                f"control line longer than {self.max_line_length} bytes"
            )
        try:
            line = raw_line.decode("utf-8").strip(_TRIM)
        except UnicodeDecodeError:
            raise ControlProtocolError("control line is not valid UTF-8") from None

        if self._state == self._VERSION:
            if not line:
                return None
            if line != VERSION_LINE:
                raise ControlProtocolError(
                    f"unsupported protocol version line {line[:64]!r}, expected {VERSION_LINE!r}"
                )
            self._state = self._COMMAND
            return None

        if self._state == self._COMMAND:
            if not line:
                raise ControlProtocolError("missing command line after the version line")
            self._command, self._parameter = _parse_command_line(line)
            self._content_length = None
            self._state = self._HEADERS
            return None

        # _HEADERS
        if not line:
            if self._content_length:
                self._state = self._CONTENT
                self._content_remaining = self._content_length
                self._content = []
                return None
            return self._finish(b"")
        name, colon, value = line.partition(":")
        if not colon or name.strip(_TRIM).lower() != "content-length":
            raise ControlProtocolError(
                f"unexpected header line {line[:64]!r}, expected Content-Length or an empty line"
            )
        if self._content_length is not None:
            raise ControlProtocolError("Content-Length given twice")
        value = value.strip(_TRIM)
        if not value.isdigit() or not value.isascii():
            raise ControlProtocolError(f"invalid Content-Length {value[:32]!r}")
        digits = value.lstrip("0") or "0"
        # Compare the digit count first: int() refuses strings of more than
        # 4300 digits with a plain ValueError, and a long line may hold one.
        if len(digits) > len(str(self.max_content_length)) or (
            int(digits) > self.max_content_length
        ):
            raise ControlProtocolError(
                f"Content-Length {digits[:32]} exceeds the limit of"
                f" {self.max_content_length} bytes"
            )
        self._content_length = int(digits)
        return None

    def content_received(self, data: bytes) -> tuple[ControlMessage | None, bytes]:
        """Take raw content bytes; return the message once complete and the bytes after it."""
        if self._state != self._CONTENT:
            raise RuntimeError("no content expected")
        take = data[: self._content_remaining]
        self._content.append(take)
        self._content_remaining -= len(take)
        if self._content_remaining:
            return None, b""
        return self._finish(b"".join(self._content)), data[len(take) :]

    def feed(self, data: bytes) -> list[ControlMessage]:
        """Take any chunk of the byte stream; return the messages it completes."""
        messages: list[ControlMessage] = []
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        # Walk the chunk with an index: slicing the rest of the buffer after
        # every line would make a chunk of many short lines cost quadratic time.
        try:
            start = 0
            size = len(buffer)
            while start < size:
                if self._state == self._CONTENT:
                    stop = min(size, start + self._content_remaining)
                    message, _ = self.content_received(buffer[start:stop])
                    start = stop
                    if message is not None:
                        messages.append(message)
                    continue
                skipped = self.skip_blanks(buffer, start)
                if skipped != start:
                    start = skipped
                    continue
                end = buffer.find(b"\n", start)
                if end < 0:
                    if size - start > self.max_line_length:
                        raise ControlProtocolError(
                            f"control line longer than {self.max_line_length} bytes"
                        )
                    self._buffer = buffer[start:]
                    break
                message = self.line_received(buffer[start:end])
                start = end + 1
                if message is not None:
                    messages.append(message)
        except ControlProtocolError as error:
            self._buffer = b""
            error.messages = messages
            raise
        return messages

    def _finish(self, content: bytes) -> ControlMessage:
        message = ControlMessage(self._command, self._parameter, content)
        self._state = self._VERSION
        self._command, self._parameter, self._content = "", None, []
        self._content_length = None
        self._content_remaining = 0
        return message
