"""A blocking TiA 1.0 client on plain sockets, call-compatible with pytia 0.1.0.

Scripts written for the seed's ``TiAClient`` keep working: same method names,
argument order and boolean returns (``if not client.connect(): ...``). The
wire is handled by the shared sans-IO core, so control replies and data
packets may be split across reads at any byte, or arrive several per read.
Packets come as :class:`~tia.client.packet.TiAPacket`. Beyond the seed:
TLS, UDP, per-connection customization, txtia's recording control, and the
counts of gaps, late and repeated packets (``client.sequence``; a repeat is
dropped, a late packet handed out and counted).

Errors, in two kinds:

* **Refusals** keep the seed's style. A server ``Error`` reply (any of its
  three forms), a call while not connected, or a connection that cannot be
  opened make the method return ``False`` (``(False, 0)`` for the methods
  returning a port); the reason is in :attr:`TiAClient.last_error`, which
  every such method clears when it starts.
* **Failures** raise :class:`TiAError`: a timeout waiting for a reply or for
  data, a connection lost or closed in the middle of an exchange, and any
  protocol violation (wrong version line, malformed framing, a reply that
  does not answer the request, malformed metainfo or data packets).
"""

from __future__ import annotations

import json
import socket
import ssl
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import Any, NoReturn

import tia.client.sockets as sockets
from tia.client.errors import TiAError, TiAException
from tia.client.packet import TiAPacket
from tia.client.sequence import Arrival, PacketSequence
from tia.client.tls import TLSSettings, secure_socket
from tia.protocol.control import (
    GET_RECORDING_STATE,
    GET_SERVER_STATUS,
    RECORDING_STATE,
    SERVER_STATUS,
    START_RECORDING,
    STOP_RECORDING,
    Command,
    ControlMessage,
    ControlParser,
    ControlProtocolError,
    build_message,
)
from tia.protocol.custom import CustomSignalInfoError, CustomSpec, build_custom_xml
from tia.protocol.metainfo import MetaInfo, MetaInfoError
from tia.protocol.packet import DataPacket, PacketError, PacketStreamDecoder, decode_packet, is_sample_major

__all__ = ["TLSSettings", "TiAClient", "TiAError", "TiAException", "TiAPacket"]

DEFAULT_TIMEOUT = 10.0
RECV_SIZE = 1 << 16
# Upper bound of what one get_data() call drains after its first packet, so a
# fast server cannot keep a single call busy forever.
MAX_DRAIN_BYTES = 4 << 20


class TiAClient:
    """Blocking TiA 1.0 client: a control connection plus one TCP or UDP data connection.

    ``timeout`` (seconds, None to wait forever) bounds connecting, each
    request/reply exchange and each ``get_data()`` call. ``tls`` (a txtia
    extension, for a server with TLS on): :class:`~tia.client.tls.TLSSettings`
    or a ready ``ssl.SSLContext``; the control and TCP data connections are
    then TLS, the server's certificate checked against the host connected to
    (or ``TLSSettings.server_name``). ``sample_order`` is how the server lays
    out each signal's samples in a packet (``tia.protocol.packet.SAMPLE_ORDERS``):
    ``channel-major``, as libtia and txtia by default, or ``sample-major``, for a txtia server with
    ``[server] sample_order = sample-major``; packets come out as (channels,
    blocksize) arrays either way. Not thread-safe: use one client per thread.
    """

    def __init__(
        self,
        server_address: str,
        server_port: int,
        timeout: float | None = DEFAULT_TIMEOUT,
        *,
        tls: TLSSettings | ssl.SSLContext | None = None,
        sample_order: str = "channel-major",
    ) -> None:
        self.address: tuple[str, int] = (server_address, server_port)
        self.timeout = sockets.check_timeout(timeout)
        is_sample_major(sample_order)  # a ValueError now rather than at the first packet
        self.sample_order = sample_order
        self._tls_context: ssl.SSLContext | None = None
        self._tls_name: str | None = None
        if isinstance(tls, ssl.SSLContext):
            self._tls_context = tls
        elif isinstance(tls, TLSSettings):
            self._tls_context, self._tls_name = tls.ssl_context(), tls.server_name
        elif tls is not None:
            raise TypeError(f"tls must be TLSSettings, ssl.SSLContext or None, not {type(tls).__name__}")
        self.bufsize = RECV_SIZE
        self.ctrl_socket: socket.socket | None = None
        self.data_socket: socket.socket | None = None
        self.last_error: str | None = None
        self._metainfo: MetaInfo | None = None
        self._parser = ControlParser()
        self._replies: deque[ControlMessage] = deque()
        self._stale_replies = 0
        self._streaming = False
        self._data_udp = False
        self._decoder = PacketStreamDecoder(sample_order=sample_order)
        self.sequence = PacketSequence()
        """The packet numbers of the current (or last) data connection: gaps, late and repeated packets."""
        self._data_closed = False
        self._data_failure: str | None = None
        self._pending_error: TiAError | None = None

    # -- connection ---------------------------------------------------------

    @property
    def metainfo(self) -> MetaInfo | None:
        """The metainfo of the last successful ``cmd_get_metainfo()``, else None."""
        return self._metainfo

    @property
    def connected(self) -> bool:
        return self.ctrl_socket is not None

    def connect(self) -> bool:
        """Open the control connection; False (reason in ``last_error``) if impossible."""
        self.last_error = None
        if self.ctrl_socket is not None:
            self.disconnect()
        try:
            self.ctrl_socket = self._secure(
                sockets.open_tcp(self.address[0], self.address[1], self.timeout), self.address[0]
            )
        except OSError as error:
            self.last_error = f"cannot connect to {self._where()}: {sockets.describe(error)}"
            return False
        self._parser = ControlParser()
        self._replies.clear()
        self._stale_replies = 0
        self._metainfo = None
        return True

    def disconnect(self) -> bool:
        """Close the control and data connections; False if there was nothing to close."""
        self.last_error = None
        self._close_data()
        sock, self.ctrl_socket = self.ctrl_socket, None
        if sock is None:
            self.last_error = "not connected"
            return False
        try:
            sock.close()
        except OSError as error:
            self.last_error = sockets.describe(error)
            return False
        return True

    def __enter__(self) -> TiAClient:
        if not self.connect():
            raise TiAError(self.last_error or f"cannot connect to {self._where()}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._streaming and self.ctrl_socket is not None:
                self.stop_streaming_data()
        except TiAError:
            # Leaving anyway; closing the control connection ends the data too.
            pass
        finally:
            self.disconnect()

    # -- control requests ---------------------------------------------------

    def cmd_check_protocol_version(self) -> bool:
        """Ask the server whether it speaks TiA 1.0."""
        return self._request_ok(Command.CHECK_PROTOCOL_VERSION)

    def cmd_get_metainfo(self) -> bool:
        """Fetch and parse the metainfo into :attr:`metainfo`; True on success."""
        reply = self._command(Command.GET_METAINFO)
        if reply is None:
            return False
        self._expect(reply, Command.METAINFO, Command.GET_METAINFO)
        try:
            self._metainfo = MetaInfo.from_xml(reply.content)
        except MetaInfoError as error:
            raise TiAError(f"server sent invalid metainfo: {error}") from None
        return True

    def customize(self, spec: CustomSpec) -> bool:
        """Ask for a channel subset and/or downsampling on this connection (SetCustomSignalInfo).

        ``spec`` is e.g. ``{"eeg": {"channels": [1, 5, 7], "downsample": 4}, "bp": {}}``:
        signal types to receive (others are not sent), their 1-based server channel
        numbers or labels in the wanted order (default all) and an integer factor
        (default 1) that divides the signal's block size. Call it before
        ``cmd_get_data_connection_*``. On success :attr:`metainfo` (and every later
        ``cmd_get_metainfo()``) describes the customized stream; False, with the
        reason in ``last_error``, when the spec does not fit the server or the
        server refuses it.
        """
        self.last_error = None
        if self.ctrl_socket is None:
            self.last_error = "not connected"
            return False
        if self._metainfo is None and not self.cmd_get_metainfo():
            return False
        assert self._metainfo is not None
        try:
            content = build_custom_xml(spec, self._metainfo)
        except CustomSignalInfoError as error:
            self.last_error = str(error)
            return False
        return self._request_ok(Command.SET_CUSTOM_SIGNAL_INFO, content) and self.cmd_get_metainfo()

    def cmd_get_data_connection_tcp(self) -> tuple[bool, int]:
        """Ask for a TCP data connection; (True, port to connect to) on success."""
        return self._get_port(Command.GET_DATA_CONNECTION, "TCP", Command.DATA_CONNECTION_PORT)

    def cmd_get_data_connection_udp(self) -> tuple[bool, int]:
        """Ask for UDP data; (True, port the datagrams are sent to) on success."""
        return self._get_port(Command.GET_DATA_CONNECTION, "UDP", Command.DATA_CONNECTION_PORT)

    def cmd_get_server_state_connection(self) -> tuple[bool, int]:
        """Ask for the server-state channel; (True, its port) on success."""
        return self._get_port(
            Command.GET_SERVER_STATE_CONNECTION, None, Command.SERVER_STATE_CONNECTION_PORT
        )

    def start_streaming_data_tcp(self, server_address: str, data_port: int) -> bool:
        """Send StartDataTransmission, then connect to the data port (the seed's order)."""
        if not self._start_transmission():
            return False
        self._close_data()
        try:
            self.data_socket = self._secure(
                sockets.open_tcp(server_address, data_port, self.timeout), server_address
            )
        except OSError as error:
            self.last_error = (
                f"cannot connect to data port {sockets.host_port(server_address, data_port)}: {sockets.describe(error)}"
            )
            return False
        self._reset_data(udp=False)
        self.sequence = PacketSequence()
        self._streaming = True
        return True

    def start_streaming_data_udp(self, server_address: str, data_port: int) -> bool:
        """Bind a UDP socket to ``data_port`` on all local addresses, then send Start."""
        if self.ctrl_socket is None:
            self.last_error = "not connected"
            return False
        self._close_data()
        try:
            sock = sockets.open_udp(server_address, data_port)
        except OSError as error:
            self.last_error = f"cannot bind UDP port {data_port}: {sockets.describe(error)}"
            return False
        self.data_socket = sock
        self._reset_data(udp=True)
        self.sequence = PacketSequence()
        try:
            started = self._start_transmission()
        except BaseException:
            self._close_data()
            raise
        if not started:
            self._close_data()
        self._streaming = started
        return started

    def stop_streaming_data(self) -> bool:
        """Send StopDataTransmission and, once the server agrees, close the data socket."""
        if not self._request_ok(Command.STOP_DATA_TRANSMISSION):
            return False
        self._close_data()
        return True

    # -- txtia's recording control (an extension: a TiA 1.0 server refuses it) --

    def start_recording(self) -> bool:
        """``StartRecording``: the server records what it sends, as its ``[recording]`` section says.

        False (reason in ``last_error``) when the server refuses: already
        recording, recording control off, or not a txtia server. The files
        open shortly after the reply; :meth:`recording_state` says
        ``starting`` until they are open, then ``on``.
        """
        return self._request_ok(START_RECORDING)

    def stop_recording(self) -> bool:
        """``StopRecording``; the files are complete once :meth:`recording_state` leaves ``stopping``."""
        return self._request_ok(STOP_RECORDING)

    def recording_state(self) -> dict[str, Any] | None:
        """``GetRecordingState``: the server's report, None (reason in ``last_error``) if refused.

        A dict with at least ``state`` (``off``, ``starting``, ``on``,
        ``stopping`` or ``error``), as the server's JSON document has it:
        ``directory`` and ``formats`` of its ``[recording]`` section and,
        once a run started, ``path`` (its raw file), ``packets``,
        ``seconds``, ``dropped``, ``error`` and ``files``.
        """
        reply = self._command(GET_RECORDING_STATE)
        if reply is None:
            return None
        self._expect(reply, RECORDING_STATE, GET_RECORDING_STATE)
        try:
            report = json.loads(reply.content.decode("utf-8")) if reply.content else {}
        except ValueError:
            report = {}
        if not isinstance(report, dict):
            report = {}
        report.setdefault("state", reply.parameter or "?")
        return report

    def server_status(self) -> dict[str, Any] | None:
        """``GetServerStatus`` (txtia extension): what the server is doing, or None (reason in
        ``last_error``) from a server without it. As the web monitor's /status: ``packet_rate``,
        ``ticks_sent``, ``late_ticks``, ``clients``, and ``sources``, each with its ``name``,
        ``driver``, ``state`` (streaming, waiting, zero-filling, failed, finished),
        ``missed_blocks``, ``overflow_samples`` and ``rate_error_ppm``."""
        reply = self._command(GET_SERVER_STATUS)
        if reply is None:
            return None
        self._expect(reply, SERVER_STATUS, GET_SERVER_STATUS)
        try:
            report = json.loads(reply.content.decode("utf-8"))
        except ValueError:
            report = None
        if not isinstance(report, dict):
            raise TiAError(f"{self._where()} answered {GET_SERVER_STATUS} with no status document")
        return report

    # -- data ---------------------------------------------------------------

    def get_data(self, timeout: float | None = None) -> list[TiAPacket]:
        """Block until at least one packet is complete, then return every complete one.

        ``timeout`` defaults to the client's. Returns ``[]`` when not streaming
        or once the server has closed the TCP data connection; raises
        :class:`TiAError` on timeout or a malformed packet.
        """
        if self._pending_error is not None:
            error, self._pending_error = self._pending_error, None
            raise error
        if self._data_failure is not None:
            raise TiAError(self._data_failure)
        sock = self.data_socket
        if sock is None or self._data_closed:
            return []
        limit = self.timeout if timeout is None else sockets.check_timeout(timeout)
        if self._data_udp:
            return self._get_datagrams(sock, sockets.deadline(limit), limit)
        return self._get_stream(sock, sockets.deadline(limit), limit)

    def packets(self, timeout: float | None = None) -> Iterator[TiAPacket]:
        """Yield packets as they arrive, until the server closes the data connection.

        Each wait is bounded by ``timeout`` (default: the client's); a timeout
        raises :class:`TiAError` out of the loop.
        """
        while True:
            batch = self.get_data(timeout)
            if not batch:
                return
            yield from batch

    def _get_stream(
        self, sock: socket.socket, deadline: float | None, limit: float | None
    ) -> list[TiAPacket]:
        packets: list[TiAPacket] = []
        while not packets:
            try:
                sock.settimeout(sockets.remaining(deadline))
                chunk = sock.recv(self.bufsize)
            except TimeoutError:
                raise TiAError(f"no data packet from {self._where()} within {limit} s") from None
            except OSError as error:
                self._fail_data(f"data connection lost: {sockets.describe(error)}")
            if not chunk:
                self._end_of_stream()
                return packets
            packets.extend(self._decode_stream(chunk))
        drained = 0
        while drained < MAX_DRAIN_BYTES and not self._data_closed:
            try:
                sock.settimeout(0.0)
                chunk = sock.recv(self.bufsize)
            except (BlockingIOError, TimeoutError, ssl.SSLWantReadError):
                break
            except OSError as error:
                # Hand out what is complete; the next call reports the loss.
                self._data_failure = f"data connection lost: {sockets.describe(error)}"
                self._close_data_socket()
                break
            if not chunk:
                try:
                    self._end_of_stream()
                except TiAError as error:
                    self._pending_error = error
                break
            drained += len(chunk)
            try:
                packets.extend(self._decode_stream(chunk))
            except TiAError as error:
                self._pending_error = error
                break
        return packets

    def _decode_stream(self, chunk: bytes) -> list[TiAPacket]:
        try:
            decoded = self._decoder.feed(chunk)
        except PacketError as error:
            message = f"malformed data packet, data connection dropped: {error}"
            if not error.packets:
                self._fail_data(message)
            # hand out the valid packets that preceded the bad one; the next call reports it
            self._data_failure = message
            self._close_data_socket()
            self._data_closed = True
            decoded = error.packets
        return [TiAPacket.from_data_packet(packet) for packet in decoded if self._is_new(packet)]

    def _end_of_stream(self) -> None:
        self._data_closed = True
        self._close_data_socket()
        if self._decoder.buffered:
            self._fail_data(
                f"server closed the data connection inside a packet"
                f" ({self._decoder.buffered} bytes of it received)"
            )

    def _get_datagrams(
        self, sock: socket.socket, deadline: float | None, limit: float | None
    ) -> list[TiAPacket]:
        packets: list[TiAPacket] = []
        while not packets:  # a repeated datagram is dropped: wait on for a new one
            try:
                sock.settimeout(sockets.remaining(deadline))
                datagram = sock.recv(self.bufsize)
            except TimeoutError:
                raise TiAError(f"no data packet from {self._where()} within {limit} s") from None
            except OSError as error:
                raise TiAError(f"UDP receive failed: {sockets.describe(error)}") from None
            packets.extend(self._decode_datagram(datagram))
        drained = 0
        while drained < MAX_DRAIN_BYTES:
            try:
                sock.settimeout(0.0)
                datagram = sock.recv(self.bufsize)
            except (BlockingIOError, TimeoutError):
                break
            except OSError as error:
                self._pending_error = TiAError(f"UDP receive failed: {sockets.describe(error)}")
                break
            drained += len(datagram)
            try:
                packets.extend(self._decode_datagram(datagram))
            except TiAError as error:
                self._pending_error = error
                break
        return packets

    def _decode_datagram(self, datagram: bytes) -> list[TiAPacket]:
        """The datagram's packet, or nothing if it is a repeat."""
        try:
            packet = decode_packet(datagram, sample_order=self.sample_order)
        except PacketError as error:
            raise TiAError(f"malformed data datagram dropped: {error}") from None
        return [TiAPacket.from_data_packet(packet)] if self._is_new(packet) else []

    def _is_new(self, packet: DataPacket) -> bool:
        """Counts ``packet`` in ``sequence``; False for a repeat, which is dropped."""
        return self.sequence.check(packet.connection_number) is not Arrival.DUPLICATE

    # -- internals ----------------------------------------------------------

    def _where(self) -> str:
        return sockets.host_port(*self.address)

    def _secure(self, sock: socket.socket, host: str) -> socket.socket:
        """``sock`` itself without TLS; else wrapped, after a handshake within the timeout."""
        if self._tls_context is None:
            return sock
        return secure_socket(sock, self._tls_context, self._tls_name or host)

    def _start_transmission(self) -> bool:
        return self._request_ok(Command.START_DATA_TRANSMISSION)

    def _request_ok(self, command: str, content: bytes = b"") -> bool:
        """A request answered ``OK``; False (reason in ``last_error``) when refused."""
        reply = self._command(command, content=content)
        if reply is None:
            return False
        self._expect(reply, Command.OK, command)
        return True

    def _get_port(
        self, command: str, parameter: str | None, answer: str
    ) -> tuple[bool, int]:
        request = command if parameter is None else f"{command}:{parameter}"
        reply = self._command(command, parameter)
        if reply is None:
            return (False, 0)
        self._expect(reply, answer, request)
        text = reply.parameter or ""
        if not (text.isascii() and text.isdigit() and 0 < int(text) <= 0xFFFF):
            raise TiAError(f"server answered {request} with an invalid port {text!r}")
        return (True, int(text))

    def _command(
        self, command: str, parameter: str | None = None, content: bytes = b""
    ) -> ControlMessage | None:
        """Send one request and return its reply; None (with last_error) for refusals."""
        self.last_error = None
        if self.ctrl_socket is None:
            self.last_error = "not connected"
            return None
        reply = self._exchange(self.ctrl_socket, build_message(command, parameter, content), command)
        if reply.is_error:
            self.last_error = reply.error_text()
            return None
        return reply

    def _exchange(self, sock: socket.socket, request: bytes, command: str) -> ControlMessage:
        deadline = sockets.deadline(self.timeout)
        try:
            sock.settimeout(sockets.remaining(deadline))
            sock.sendall(request)
        except TimeoutError:
            self._drop_control()
            raise TiAError(f"timed out sending {command} to {self._where()}") from None
        except OSError as error:
            self._drop_control()
            raise TiAError(
                f"control connection lost sending {command}: {sockets.describe(error)}"
            ) from None
        while True:
            while self._replies:
                reply = self._replies.popleft()
                if self._stale_replies:
                    # The late answer to a request that already timed out.
                    self._stale_replies -= 1
                    continue
                return reply
            try:
                sock.settimeout(sockets.remaining(deadline))
                chunk = sock.recv(self.bufsize)
            except TimeoutError:
                self._stale_replies += 1
                raise TiAError(
                    f"no reply to {command} from {self._where()} within {self.timeout} s"
                ) from None
            except OSError as error:
                self._drop_control()
                raise TiAError(
                    f"control connection lost waiting for the reply to {command}:"
                    f" {sockets.describe(error)}"
                ) from None
            if not chunk:
                self._drop_control()
                raise TiAError(
                    f"server closed the control connection instead of answering {command}"
                )
            try:
                self._replies.extend(self._parser.feed(chunk))
            except ControlProtocolError as error:
                self._drop_control()
                raise TiAError(f"invalid reply to {command}: {error}") from None

    def _expect(self, reply: ControlMessage, answer: str, request: str) -> None:
        if reply.command != answer:
            raise TiAError(f"server answered {request} with {reply.command!r}, expected {answer!r}")

    def _drop_control(self) -> None:
        """Close a control connection whose stream can no longer be trusted."""
        sock, self.ctrl_socket = self.ctrl_socket, None
        if sock is not None:
            sock.close()

    def _reset_data(self, udp: bool) -> None:
        self._data_udp = udp
        self._decoder = PacketStreamDecoder(sample_order=self.sample_order)
        self._data_closed = False
        self._data_failure = None
        self._pending_error = None

    def _fail_data(self, message: str) -> NoReturn:
        self._data_failure = message
        self._close_data_socket()
        raise TiAError(message)

    def _close_data_socket(self) -> None:
        sock, self.data_socket = self.data_socket, None
        if sock is not None:
            sock.close()

    def _close_data(self) -> None:
        """Forget the data connection entirely (stopped, replaced or disconnected)."""
        self._close_data_socket()
        self._reset_data(udp=False)
        self._streaming = False

