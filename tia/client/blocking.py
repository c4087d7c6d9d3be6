"""A blocking TiA 1.0 client on plain sockets, call-compatible with pytia 0.1.0.

Scripts written for the seed's ``TiAClient`` keep working: same method names,
argument order and boolean returns (``if not client.connect(): ...``). The
wire is handled by the shared sans-IO core, so control replies and data
packets may be split across reads at any byte, or arrive several per read.

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

import socket
import ssl
import time
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import NoReturn

from tia.client.tls import TLSSettings, secure_socket
from tia.protocol.control import (
    Command,
    ControlMessage,
    ControlParser,
    ControlProtocolError,
    build_message,
)
from tia.protocol.custom import CustomSignalInfoError, CustomSpec, build_custom_xml
from tia.protocol.metainfo import MetaInfo, MetaInfoError
from tia.protocol.packet import (
    DataPacket,
    PacketError,
    PacketStreamDecoder,
    SampleArray,
    decode_packet,
)
from tia.protocol.signals import UnknownSignalType, by_flag

__all__ = ["TLSSettings", "TiAClient", "TiAError", "TiAException", "TiAPacket"]

DEFAULT_TIMEOUT = 10.0
RECV_SIZE = 1 << 16
UDP_RECV_BUFFER = 8 << 20
# Upper bound of what one get_data() call drains after its first packet, so a
# fast server cannot keep a single call busy forever.
MAX_DRAIN_BYTES = 4 << 20


class TiAError(Exception):
    """A timeout, a lost connection or a protocol violation: the call could not complete."""


# The seed's name for its exception, for scripts that catch it by that name.
TiAException = TiAError


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


def _open_tcp(host: str, port: int, timeout: float | None) -> socket.socket:
    """Open a TCP connection; a seam so that tests can substitute the socket."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _open_udp(server_address: str, port: int) -> socket.socket:
    """Bind a UDP socket on every local address at ``port``, in the server's family."""
    family = socket.getaddrinfo(server_address, port, type=socket.SOCK_DGRAM)[0][0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        # The reference broadcasts to one fixed port: let several clients share it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # A big buffer rides out bursts while the caller is busy; the kernel may cap it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECV_BUFFER)
        sock.bind(("::" if family == socket.AF_INET6 else "", port))
    except OSError:
        sock.close()
        raise
    return sock


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _remaining(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (None: no limit); raises TimeoutError when none."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be positive or None, not {timeout!r}")
    return timeout


class TiAClient:
    """Blocking TiA 1.0 client: a control connection plus one TCP or UDP data connection.

    ``timeout`` (seconds, None to wait forever) bounds connecting, each
    request/reply exchange and each ``get_data()`` call. ``tls`` (a txtia
    extension, for a server with TLS on): :class:`~tia.client.tls.TLSSettings`
    or a ready ``ssl.SSLContext``; the control and TCP data connections are
    then TLS, the server's certificate checked against the host connected to
    (or ``TLSSettings.server_name``). Not thread-safe: use one client per thread.
    """

    def __init__(
        self,
        server_address: str,
        server_port: int,
        timeout: float | None = DEFAULT_TIMEOUT,
        *,
        tls: TLSSettings | ssl.SSLContext | None = None,
    ) -> None:
        self.address: tuple[str, int] = (server_address, server_port)
        self.timeout = _check_timeout(timeout)
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
        self._decoder = PacketStreamDecoder()
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
                _open_tcp(self.address[0], self.address[1], self.timeout), self.address[0]
            )
        except OSError as error:
            self.last_error = f"cannot connect to {self._where()}: {_describe(error)}"
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
            self.last_error = _describe(error)
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
        reply = self._command(Command.CHECK_PROTOCOL_VERSION)
        if reply is None:
            return False
        self._expect(reply, Command.OK, Command.CHECK_PROTOCOL_VERSION)
        return True

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
        reply = self._command(Command.SET_CUSTOM_SIGNAL_INFO, content=content)
        if reply is None:
            return False
        self._expect(reply, Command.OK, Command.SET_CUSTOM_SIGNAL_INFO)
        return self.cmd_get_metainfo()

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
                _open_tcp(server_address, data_port, self.timeout), server_address
            )
        except OSError as error:
            self.last_error = (
                f"cannot connect to data port {server_address}:{data_port}: {_describe(error)}"
            )
            return False
        self._reset_data(udp=False)
        self._streaming = True
        return True

    def start_streaming_data_udp(self, server_address: str, data_port: int) -> bool:
        """Bind a UDP socket to ``data_port`` on all local addresses, then send Start."""
        if self.ctrl_socket is None:
            self.last_error = "not connected"
            return False
        self._close_data()
        try:
            sock = _open_udp(server_address, data_port)
        except OSError as error:
            self.last_error = f"cannot bind UDP port {data_port}: {_describe(error)}"
            return False
        self.data_socket = sock
        self._reset_data(udp=True)
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
        reply = self._command(Command.STOP_DATA_TRANSMISSION)
        if reply is None:
            return False
        self._expect(reply, Command.OK, Command.STOP_DATA_TRANSMISSION)
        self._close_data()
        return True

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
        limit = self.timeout if timeout is None else _check_timeout(timeout)
        if self._data_udp:
            return self._get_datagrams(sock, _deadline(limit), limit)
        return self._get_stream(sock, _deadline(limit), limit)

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
                sock.settimeout(_remaining(deadline))
                chunk = sock.recv(self.bufsize)
            except TimeoutError:
                raise TiAError(f"no data packet from {self._where()} within {limit} s") from None
            except OSError as error:
                self._fail_data(f"data connection lost: {_describe(error)}")
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
                self._data_failure = f"data connection lost: {_describe(error)}"
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
        return [TiAPacket.from_data_packet(packet) for packet in decoded]

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
        try:
            sock.settimeout(_remaining(deadline))
            datagram = sock.recv(self.bufsize)
        except TimeoutError:
            raise TiAError(f"no data packet from {self._where()} within {limit} s") from None
        except OSError as error:
            raise TiAError(f"UDP receive failed: {_describe(error)}") from None
        packets = [self._decode_datagram(datagram)]
        drained = 0
        while drained < MAX_DRAIN_BYTES:
            try:
                sock.settimeout(0.0)
                datagram = sock.recv(self.bufsize)
            except (BlockingIOError, TimeoutError):
                break
            except OSError as error:
                self._pending_error = TiAError(f"UDP receive failed: {_describe(error)}")
                break
            drained += len(datagram)
            try:
                packets.append(self._decode_datagram(datagram))
            except TiAError as error:
                self._pending_error = error
                break
        return packets

    @staticmethod
    def _decode_datagram(datagram: bytes) -> TiAPacket:
        try:
            return TiAPacket.from_data_packet(decode_packet(datagram))
        except PacketError as error:
            raise TiAError(f"malformed data datagram dropped: {error}") from None

    # -- internals ----------------------------------------------------------

    def _where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def _secure(self, sock: socket.socket, host: str) -> socket.socket:
        """``sock`` itself without TLS; else wrapped, after a handshake within the timeout."""
        if self._tls_context is None:
            return sock
        return secure_socket(sock, self._tls_context, self._tls_name or host)

    def _start_transmission(self) -> bool:
        reply = self._command(Command.START_DATA_TRANSMISSION)
        if reply is None:
            return False
        self._expect(reply, Command.OK, Command.START_DATA_TRANSMISSION)
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
        deadline = _deadline(self.timeout)
        try:
            sock.settimeout(_remaining(deadline))
            sock.sendall(request)
        except TimeoutError:
            self._drop_control()
            raise TiAError(f"timed out sending {command} to {self._where()}") from None
        except OSError as error:
            self._drop_control()
            raise TiAError(
                f"control connection lost sending {command}: {_describe(error)}"
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
                sock.settimeout(_remaining(deadline))
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
                    f" {_describe(error)}"
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
        self._decoder = PacketStreamDecoder()
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


def _describe(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__
