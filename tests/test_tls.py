"""Opt-in TLS (a txtia extension) end to end, on real sockets (127.0.0.1, port 0).

A throwaway CA, a server certificate for 127.0.0.1 and localhost, client
certificates of that CA and of a stranger's CA are made once per session.
Both clients must stream the exact ramp over TLS; plain peers, wrong CAs and
missing client certificates fail fast with a reason and leave the server
serving; UDP is refused while TLS is on; a non-reading TLS data client is
skipped within its backlog; configuration errors name file, section and key.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from support import (
    BLOCK,
    CHANNELS,
    ControlClient,
    LogCapture,
    P,
    PacketCollector,
    RawClient,
    SocketTestCase,
    check_stream,
    config_from_text,
    port_of,
    ramp_config,
    ramp_values,
    read_available,
    socket_of,
    until,
)
from twisted.internet import reactor, threads
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.protocol import Protocol

from tia.client import TiAClientError, TiAStream, connectTiA
from tia.client.blocking import TiAClient, TiAError, TiAPacket
from tia.client.tls import TLSSettings, twisted_options
from tia.config import ConfigError, ServerConfig, load_config, with_control_port
from tia.protocol.packet import DataPacket
from tia.server.data import TCPDataListener
from tia.server.guard import ConnectionGuard
from tia.server.tls import TLSServerFactory

ROOT = Path(__file__).resolve().parent.parent


# -- a throwaway PKI ---------------------------------------------------------------


@dataclass(frozen=True)
class PKI:
    folder: Path

    def __getattr__(self, name: str) -> str:
        """``pki.server_pem`` is the path of ``server.pem`` in the folder."""
        if name.startswith("_"):
            raise AttributeError(name)
        stem, _, suffix = name.rpartition("_")
        return str(self.folder / f"{stem.replace('_', '-')}.{suffix}")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    key: ec.EllipticCurvePrivateKey, name: str, issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None, usage: x509.ObjectIdentifier | None = None,
    names: tuple[x509.GeneralName, ...] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(_name(name))
        .issuer_name(issuer.subject if issuer is not None else _name(name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if issuer is None:  # a CA
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, stem: str, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
    (folder / f"{stem}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        (folder / f"{stem}.key").write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
        )


def make_pki(folder: Path) -> PKI:
    """ca.pem; server.pem/.key (localhost, 127.0.0.1); client.pem/.key; other-ca.pem, other-client.pem/.key."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(ca_key, "txtia test CA", ca_key, None)
    _write(folder, "ca", ca, None)
    server_key = ec.generate_private_key(ec.SECP256R1())
    names = (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    server = _certificate(server_key, "localhost", ca_key, ca, ExtendedKeyUsageOID.SERVER_AUTH, names)
    _write(folder, "server", server, server_key)
    client_key = ec.generate_private_key(ec.SECP256R1())
    _write(folder, "client", _certificate(client_key, "client", ca_key, ca, ExtendedKeyUsageOID.CLIENT_AUTH),
           client_key)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _certificate(other_key, "a stranger's CA", other_key, None)
    _write(folder, "other-ca", other, None)
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger = _certificate(stranger_key, "stranger", other_key, other, ExtendedKeyUsageOID.CLIENT_AUTH)
    _write(folder, "other-client", stranger, stranger_key)
    return PKI(folder)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(autouse=True)
def _pki_for_trial(request: pytest.FixtureRequest, pki: PKI) -> None:
    """Trial test cases take no fixtures as arguments: hand them the PKI as ``self.pki``."""
    if request.instance is not None:
        request.instance.pki = pki


def tls_config(pki: PKI, mutual: bool = False, server_extra: str = "", **ramp: Any) -> ServerConfig:
    lines = f"tls_certificate = {pki.server_pem}\ntls_key = {pki.server_key}\n"
    if mutual:
        lines += f"tls_client_ca = {pki.ca_pem}\n"
    return ramp_config(server_extra=lines + server_extra, **ramp)


# -- helpers -------------------------------------------------------------------------


def blocking_stream(port: int, tls: TLSSettings | ssl.SSLContext | None, count: int = 30) -> list[TiAPacket]:
    """Connect, stream ``count`` packets over TCP and stop, with the blocking client (in a thread)."""
    with TiAClient("127.0.0.1", port, timeout=10, tls=tls) as client:
        assert client.cmd_check_protocol_version(), client.last_error
        assert client.cmd_get_metainfo()
        ok, data_port = client.cmd_get_data_connection_tcp()
        assert ok, client.last_error
        assert client.start_streaming_data_tcp("127.0.0.1", data_port), client.last_error
        packets: list[TiAPacket] = []
        while len(packets) < count:
            packets.extend(client.get_data())
        assert client.stop_streaming_data()
    return packets


def check_blocking_packets(packets: list[TiAPacket]) -> None:
    numbers = [p.packet_number for p in packets]
    assert numbers == list(range(len(numbers)))
    ids = [p.packet_id for p in packets]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    for packet in packets:
        np.testing.assert_array_equal(packet.arrays[0], ramp_values(CHANNELS, packet.packet_id * BLOCK, BLOCK))


class TLSCase(SocketTestCase):
    timeout = 60
    pki: PKI
    mutual = False
    server_extra = ""

    def setUp(self) -> None:
        self.log = LogCapture(self)
        self.serve(tls_config(self.pki, self.mutual, self.server_extra, rate=1000, blocksize=BLOCK, channels=CHANNELS))

    def logged(self, text: str) -> int:
        return self.log.count(text)

    def settings(self, **changes: Any) -> TLSSettings:
        """A client trusting the test CA (with the client certificate when the server wants one)."""
        fields: dict[str, Any] = {"ca": self.pki.ca_pem}
        if self.mutual:
            fields.update(certificate=self.pki.client_pem, key=self.pki.client_key)
        fields.update(changes)
        return TLSSettings(**fields)

    def in_thread(self, function: Any, *args: Any) -> Any:
        return threads.deferToThread(function, *args)

    def tls_connect(self, port: int, protocol: P, settings: TLSSettings | None = None) -> Deferred[P]:
        """A Twisted peer over TLS to 127.0.0.1:``port``, closed when the test ends."""
        options = twisted_options(settings or self.settings(), "127.0.0.1")
        endpoint = wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        self.close_at_end(protocol)
        connected: Deferred[P] = connectProtocol(endpoint, protocol).addCallback(lambda _: protocol)
        return connected


# -- TLS with any client -------------------------------------------------------------


class TLSStreamingTests(TLSCase):
    @inlineCallbacks
    def test_blocking_client_streams_the_exact_ramp(self) -> Any:
        check_blocking_packets((yield self.in_thread(blocking_stream, self.port, self.settings())))
        # the same with a ready SSLContext, and with the certificate's DNS name instead of the address
        context = self.settings().ssl_context()
        check_blocking_packets((yield self.in_thread(blocking_stream, self.port, context, 10)))
        named = self.settings(server_name="localhost")
        check_blocking_packets((yield self.in_thread(blocking_stream, self.port, named, 10)))

    @inlineCallbacks
    def test_twisted_client_streams_the_exact_ramp_with_server_state(self) -> Any:
        packets: list[DataPacket] = []
        states: list[str] = []
        stream = TiAStream(reactor, f"tcp:127.0.0.1:{self.port}", onPacket=packets.append,
                           onServerState=states.append, tls=self.settings())
        meta = yield stream.start()
        self.assertEqual(meta.signal("eeg").num_channels, CHANNELS)
        yield until(lambda: len(packets) >= 30)
        yield stream.stop()
        check_stream(self, packets)
        self.assertEqual(states, ["ServerStateRunning"])

    @inlineCallbacks
    def test_udp_is_refused_with_a_reason(self) -> Any:
        def ask() -> tuple[tuple[bool, int], str | None]:
            with TiAClient("127.0.0.1", self.port, timeout=10, tls=self.settings()) as client:
                return client.cmd_get_data_connection_udp(), client.last_error

        result, reason = yield self.in_thread(ask)
        self.assertEqual(result, (False, 0))
        self.assertIn("not encrypted", reason or "")
        self.assertIsNone(self.service.data.udp_sender)  # no UDP socket, no group stream
        with self.assertRaises(ValueError):
            TiAStream(reactor, f"tcp:127.0.0.1:{self.port}", transport="UDP", tls=self.settings())

    @inlineCallbacks
    def test_a_plain_client_is_told_and_tls_clients_go_on(self) -> Any:
        def plain() -> tuple[bool, str | None, float]:
            started = time.monotonic()
            client = TiAClient("127.0.0.1", self.port, timeout=10)
            assert client.connect()
            ok, reason = client.cmd_check_protocol_version(), client.last_error
            client.disconnect()
            return ok, reason, time.monotonic() - started

        ok, reason, seconds = yield self.in_thread(plain)
        self.assertFalse(ok)
        self.assertIn("this server requires TLS", reason or "")
        self.assertLess(seconds, 2.0)
        self.assertEqual(self.logged("refused a plain TiA control connection from 127.0.0.1"), 1)
        check_blocking_packets((yield self.in_thread(blocking_stream, self.port, self.settings(), 10)))

    @inlineCallbacks
    def test_a_plain_twisted_peer_fails_fast(self) -> Any:
        plain = ControlClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), plain)
        reply = yield plain.request("CheckProtocolVersion")
        self.assertTrue(reply.is_error)
        yield plain.lost

    @inlineCallbacks
    def test_client_with_another_ca_refuses_the_server(self) -> Any:
        def connect(settings: TLSSettings) -> tuple[bool, str | None, float]:
            started = time.monotonic()
            client = TiAClient("127.0.0.1", self.port, timeout=10, tls=settings)
            return client.connect(), client.last_error, time.monotonic() - started

        ok, reason, seconds = yield self.in_thread(connect, self.settings(ca=self.pki.other_ca_pem))
        self.assertFalse(ok)
        self.assertIn("CERTIFICATE_VERIFY_FAILED", reason or "")
        self.assertLess(seconds, 2.0)
        ok, reason, _ = yield self.in_thread(connect, self.settings(server_name="tia.example.org"))
        self.assertFalse(ok)  # the certificate is for localhost and 127.0.0.1 only
        self.assertIn("CERTIFICATE_VERIFY_FAILED", reason or "")
        stream = TiAStream(reactor, f"tcp:127.0.0.1:{self.port}", tls=self.settings(ca=self.pki.other_ca_pem))
        with self.assertRaises(TiAClientError):
            yield stream.start()
        check_blocking_packets((yield self.in_thread(blocking_stream, self.port, self.settings(), 10)))

    @inlineCallbacks
    def test_tcp_details_hold_through_the_tls_layer(self) -> Any:
        """Keepalive reaches the socket beneath; the raw-socket fast path is off; one peer per data port."""
        control = yield self.tls_connect(self.port, ControlClient())
        data_port = port_of((yield control.request("GetDataConnection:TCP")))
        stranger = socket.socket()
        self.addCleanup(stranger.close)
        stranger.bind(("127.0.0.2", 0))
        stranger.setblocking(False)
        stranger.connect_ex(("127.0.0.1", data_port))  # first in line, but not the control's peer
        stranger_read: list[bytes] = []

        def stranger_closed() -> bool:
            data, closed = read_available(stranger)
            stranger_read.append(data)
            return closed

        yield until(stranger_closed)
        self.assertEqual(b"".join(stranger_read), b"")  # closed before any handshake
        collector = yield self.tls_connect(data_port, PacketCollector())
        yield control.request("StartDataTransmission")
        yield collector.wait_for(20)
        check_stream(self, collector.packets)
        server = yield self.session(control)
        tcp = server.tcp_data
        self.assertIsNotNone(tcp)
        self.assertFalse(tcp.writes_directly)  # packets go through the encrypting transport
        for protocol in (server, tcp):
            self.assertEqual(socket_of(protocol).getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1)

    @inlineCallbacks
    def test_a_violation_is_answered_then_closed_over_tls(self) -> Any:
        peer = yield self.tls_connect(self.port, RawClient())
        peer.send(b"GET / HTTP/1.1\r\n\r\n")
        yield peer.lost
        self.assertTrue(bytes(peer.received).startswith(b"TiA 1.0\nError -- "), bytes(peer.received))
        self.assertLess(peer.lost_at - peer.connected_at, 1.0)  # close_notify answered: no linger

    @inlineCallbacks
    def test_graceful_stop_reaches_tls_peers(self) -> Any:
        control = yield self.tls_connect(self.port, ControlClient())
        state = yield self.tls_connect(port_of((yield control.request("GetServerStateConnection"))), RawClient())
        collector = yield self.tls_connect(port_of((yield control.request("GetDataConnection:TCP"))),
                                           PacketCollector())
        yield control.request("StartDataTransmission")
        yield collector.wait_for(3)
        started = time.monotonic()
        yield self.service.stopService()
        yield state.lost
        yield collector.lost
        yield control.lost
        self.assertLess(time.monotonic() - started, 1.5)  # every peer closed cleanly, none aborted
        self.assertEqual(bytes(state.received), b"TiA 1.0\nServerStateRunning\n\nTiA 1.0\nServerStateShutdown\n\n")
        check_stream(self, collector.packets)

    @inlineCallbacks
    def test_the_end_of_a_tls_stream_is_an_end_for_the_blocking_client(self) -> Any:
        streaming: Deferred[None] = Deferred()

        def stream_to_the_end() -> list[TiAPacket]:
            with TiAClient("127.0.0.1", self.port, timeout=10, tls=self.settings()) as client:
                ok, data_port = client.cmd_get_data_connection_tcp()
                assert ok and client.start_streaming_data_tcp("127.0.0.1", data_port)
                packets = client.get_data()
                IReactorThreads(reactor).callFromThread(streaming.callback, None)
                packets.extend(client.packets())  # until the server closes: [] then, no error
                return packets

        done = self.in_thread(stream_to_the_end)
        yield streaming
        yield self.service.stopService()  # the blocking client reads no control: up to the 2 s grace
        packets = yield done
        check_blocking_packets(packets)

    @inlineCallbacks
    def test_a_peer_that_never_handshakes_is_closed(self) -> Any:
        factory = self.service.control.factory
        assert isinstance(factory, TLSServerFactory)
        factory.handshake_timeout = 0.3
        silent = socket.create_connection(("127.0.0.1", self.port))
        self.addCleanup(silent.close)
        silent.setblocking(False)
        yield until(lambda: read_available(silent)[1])  # closed by the server
        self.assertEqual(self.logged("no TLS handshake within 0.3 s"), 1)


class TLSLimitTests(TLSCase):
    server_extra = "max_connections_per_host = 1\nallow = 127.0.0.1"

    @inlineCallbacks
    def test_refusals_are_polite_over_tls_and_the_allow_list_comes_first(self) -> Any:
        first = yield self.tls_connect(self.port, ControlClient())
        second = yield self.tls_connect(self.port, RawClient())
        yield second.lost
        self.assertEqual(bytes(second.received), b"TiA 1.0\nError -- too many connections from 127.0.0.1 "
                                                 b"(limit 1 per host)\n\n")
        self.assertEqual(self.logged("1 connections from one host is the limit"), 1)
        stranger = socket.socket()
        self.addCleanup(stranger.close)
        stranger.bind(("127.0.0.2", 0))
        stranger.settimeout(5)
        stranger.connect(("127.0.0.1", self.port))
        self.assertEqual((yield self.in_thread(stranger.recv, 100)), b"")  # closed without a handshake
        self.assertEqual(self.logged("refused a control connection from 127.0.0.2: not in the allowed"), 1)
        self.assertEqual((yield first.request("CheckProtocolVersion")).command, "OK")

    @inlineCallbacks
    def test_the_refusal_reply_is_readable_over_tls(self) -> Any:
        def two() -> tuple[bool, str | None]:
            with TiAClient("127.0.0.1", self.port, timeout=10, tls=self.settings()) as first:
                assert first.cmd_check_protocol_version()
                second = TiAClient("127.0.0.1", self.port, timeout=10, tls=self.settings())
                assert second.connect()
                return second.cmd_check_protocol_version(), second.last_error

        ok, reason = yield self.in_thread(two)
        self.assertFalse(ok)
        self.assertEqual(reason, "too many connections from 127.0.0.1 (limit 1 per host)")


class PlainServerTests(SocketTestCase):
    """TLS clients against a server with TLS off fail fast, with a reason."""

    timeout = 30
    pki: PKI

    def setUp(self) -> None:
        self.serve(ramp_config())

    @inlineCallbacks
    def test_tls_clients_of_a_plain_server_fail_fast(self) -> Any:
        def connect() -> tuple[bool, str | None, float]:
            started = time.monotonic()
            client = TiAClient("127.0.0.1", self.port, timeout=10, tls=TLSSettings(ca=self.pki.ca_pem))
            return client.connect(), client.last_error, time.monotonic() - started

        ok, reason, seconds = yield threads.deferToThread(connect)
        self.assertFalse(ok)
        self.assertIn("WRONG_VERSION_NUMBER", reason or "")
        self.assertLess(seconds, 2.0)
        started = time.monotonic()
        stream = TiAStream(reactor, f"tcp:127.0.0.1:{self.port}", tls=TLSSettings(ca=self.pki.ca_pem))
        with self.assertRaises(TiAClientError):
            yield stream.start()
        self.assertLess(time.monotonic() - started, 2.0)


# -- mutual TLS ----------------------------------------------------------------------


class MutualTLSTests(TLSCase):
    mutual = True

    @inlineCallbacks
    def test_only_clients_with_a_certificate_of_the_ca_get_in(self) -> Any:
        def refused(settings: TLSSettings) -> str:
            client = TiAClient("127.0.0.1", self.port, timeout=10, tls=settings)
            started = time.monotonic()
            try:
                if not client.connect():
                    return client.last_error or "?"
                with pytest.raises(TiAError) as info:  # TLS 1.3: the refusal arrives after the handshake
                    client.cmd_check_protocol_version()
                return str(info.value)
            finally:
                client.disconnect()
                assert time.monotonic() - started < 2.0

        without = yield self.in_thread(refused, TLSSettings(ca=self.pki.ca_pem))
        self.assertIn("control connection lost", without)  # the alert, or a reset racing it
        stranger = TLSSettings(ca=self.pki.ca_pem, certificate=self.pki.other_client_pem,
                               key=self.pki.other_client_key)
        foreign = yield self.in_thread(refused, stranger)
        self.assertIn("control connection lost", foreign)
        # the server says why, once (rate-limited per host)
        self.assertEqual(self.logged("TLS handshake of a control connection from 127.0.0.1 failed"), 1)
        check_blocking_packets((yield self.in_thread(blocking_stream, self.port, self.settings())))

    @inlineCallbacks
    def test_twisted_client_with_its_certificate_streams(self) -> Any:
        packets: list[DataPacket] = []
        stream = TiAStream(reactor, f"tcp:127.0.0.1:{self.port}", onPacket=packets.append,
                           onServerState=lambda state: None, tls=self.settings())
        yield stream.start()
        yield until(lambda: len(packets) >= 20)
        yield stream.stop()
        check_stream(self, packets)
        control = yield connectTiA(reactor, f"tcp:127.0.0.1:{self.port}", tls=self.settings(server_name="localhost"))
        yield control.checkProtocolVersion()
        yield control.close()

    @inlineCallbacks
    def test_twisted_client_without_a_certificate_is_refused(self) -> Any:
        stream = TiAStream(reactor, f"tcp:127.0.0.1:{self.port}", tls=TLSSettings(ca=self.pki.ca_pem), timeout=5)
        with self.assertRaises(TiAClientError):
            yield stream.start()


# -- a slow TLS data client ----------------------------------------------------------


class SlowTLSClientTests(SocketTestCase):
    """A TLS data client that stops reading is skipped within its backlog; another stays gap-free."""

    timeout = 60
    pki: PKI

    def setUp(self) -> None:
        # 256 ch x 8 samples: 8 kB packets at 256 packets/s (2 MB/s per client)
        self.serve(tls_config(self.pki, server_extra="backlog = 0.2", rate=2048, blocksize=8, channels=256))

    @inlineCallbacks
    def test_non_reading_tls_client_is_dropped_within_its_backlog(self) -> Any:
        settings = TLSSettings(ca=self.pki.ca_pem)
        options = twisted_options(settings, "127.0.0.1")

        def tls(port: int, protocol: Protocol) -> Any:
            endpoint = wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
            self.addCleanup(lambda: protocol.transport.loseConnection() if protocol.transport else None)
            return connectProtocol(endpoint, protocol)

        healthy_control, slow_control = ControlClient(), ControlClient()
        yield tls(self.port, healthy_control)
        yield tls(self.port, slow_control)
        healthy = PacketCollector()
        yield tls(port_of((yield healthy_control.request("GetDataConnection:TCP"))), healthy)
        slow_port = port_of((yield slow_control.request("GetDataConnection:TCP")))

        def handshake() -> ssl.SSLSocket:
            raw = socket.socket()
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.connect(("127.0.0.1", slow_port))
            return settings.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1")

        slow = yield threads.deferToThread(handshake)
        self.addCleanup(slow.close)
        yield healthy_control.request("StartDataTransmission")
        yield slow_control.request("StartDataTransmission")
        server_side = yield self.dropping_side(slow)
        tcp = server_side.transport.transport  # the socket's transport beneath the TLS layer
        buffered = len(tcp.dataBuffer) + sum(map(len, tcp._tempDataBuffer))
        self.assertLess(buffered, server_side.backlog_bytes + 2 * 64 * 1024 + 2 * 16 * 1024)
        self.assertEqual(server_side.transport._appSendBuffer, [])
        yield self.assert_exact_while_another_drops(healthy, slow, 256, 8, (ssl.SSLWantReadError,))


# -- units: the wrapper refuses before the handshake ---------------------------------


def test_the_tls_wrapper_keeps_the_data_port_peer_check(pki: PKI) -> None:
    from tia.server.tls import ServerTLS

    config = tls_config(pki)
    assert config.tls is not None
    server_tls = ServerTLS(config.tls, reactor, ConnectionGuard())
    listener = TCPDataListener("127.0.0.1", 1 << 16, lambda p: None, lambda p: None)
    wrapped = server_tls.wrap(listener, "data")
    assert wrapped.buildProtocol(IPv4Address("TCP", "127.0.0.2", 4000)) is None  # not the control's peer
    assert wrapped.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4001)) is not None
    assert wrapped.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4002)) is None  # only once


# -- configuration -------------------------------------------------------------------


def server_ini(folder: Path, lines: str) -> Path:
    path = folder / "server.ini"
    control = "" if "control =" in lines else "control = tcp:0:interface=127.0.0.1\n"
    path.write_text(f"[server]\n{control}{lines}\n"
                    "[source:eeg]\ndriver = ramp\nrate = 100\nchannels = 1\ntype = eeg\n")
    return path


def test_relative_paths_and_the_default_key(pki: PKI, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    combined = certs / "server-and-key.pem"
    combined.write_bytes(Path(pki.server_pem).read_bytes() + Path(pki.server_key).read_bytes())
    shutil.copy(pki.ca_pem, certs / "ca.pem")
    lines = "tls_certificate = certs/server-and-key.pem\ntls_client_ca = certs/ca.pem"
    config = load_config(server_ini(tmp_path, lines))
    assert config.tls is not None
    assert config.tls.certificate == config.tls.key == str(combined)  # relative to the INI file; key defaults
    assert config.tls.client_ca == str(certs / "ca.pem") and config.tls.mode == "mutual"
    assert ramp_config().tls is None  # off by default


@pytest.mark.parametrize(
    ("lines", "key", "message"),
    [
        ("tls_certificate = missing.pem", "tls_certificate", "cannot read"),
        ("tls_certificate = {garbage}", "tls_certificate", "is not a PEM certificate"),
        ("tls_certificate = {ca_pem}\ntls_key = {server_key}", "tls_key", "does not belong to the certificate"),
        ("tls_certificate = {server_pem}", "tls_key", "holds no private key; set tls_key"),
        ("tls_certificate = {server_pem}\ntls_key = {server_pem}", "tls_key", "holds no private key"),
        ("tls_certificate = {server_pem}\ntls_key = {encrypted}", "tls_key", "is encrypted"),
        ("tls_certificate = {server_pem}\ntls_key = {server_key}\ntls_client_ca = {garbage}", "tls_client_ca",
         "is not a PEM certificate"),
        ("tls_key = {server_key}", "tls_key", "needs tls_certificate"),
        ("tls_client_ca = {ca_pem}", "tls_client_ca", "needs tls_certificate"),
        ("control = ssl:9443:privateKey={server_key}\ntls_certificate = {server_pem}", "control", "is TLS already"),
    ],
)
def test_configuration_errors_name_file_section_and_key(
    pki: PKI, tmp_path: Path, lines: str, key: str, message: str
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    encrypted = tmp_path / "encrypted.key"
    loaded = serialization.load_pem_private_key(Path(pki.server_key).read_bytes(), password=None)
    encrypted.write_bytes(loaded.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ))
    path = server_ini(tmp_path, lines.format(
        garbage=garbage, encrypted=encrypted, ca_pem=pki.ca_pem, server_pem=pki.server_pem, server_key=pki.server_key,
    ))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path} [server] {key}: "), str(info.value)
    assert message in str(info.value)


def test_without_pyopenssl_the_error_says_what_to_install(
    pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "OpenSSL", None)  # import OpenSSL now fails
    monkeypatch.delitem(sys.modules, "tia.server.tls", raising=False)
    with pytest.raises(ConfigError) as info:
        config_from_text(f"[server]\ntls_certificate = {pki.server_pem}\ntls_key = {pki.server_key}\n"
                         "[source:eeg]\ndriver = ramp\nrate = 10\nchannels = 1\ntype = eeg\n")
    assert "test.ini [server] tls_certificate: TLS needs pyOpenSSL: pip install 'txtia[tls]'" == str(info.value)


def test_client_settings_errors(pki: PKI, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"TLSSettings\.ca: cannot load"):
        TLSSettings(ca=tmp_path / "missing.pem").ssl_context()
    with pytest.raises(ValueError, match=r"TLSSettings\.certificate/key"):
        TLSSettings(ca=pki.ca_pem, certificate=pki.client_pem, key=pki.server_key).ssl_context()
    with pytest.raises(ValueError, match="key without a certificate"):
        TLSSettings(key=pki.client_key)
    with pytest.raises(TypeError):
        TiAClient("127.0.0.1", 9000, tls="yes")  # type: ignore[arg-type]  # the wrong type under test


# -- the shipped example -------------------------------------------------------------


class ExampleConfigTests(SocketTestCase):
    """etc/examples/tls.ini starts as shipped once its certificates are where it says."""

    timeout = 60
    pki: PKI

    @inlineCallbacks
    def test_the_example_starts_and_serves_a_mutual_tls_client(self) -> Any:
        folder = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, folder)
        (folder / "certs").mkdir()
        shutil.copy(ROOT / "etc" / "examples" / "tls.ini", folder / "tls.ini")
        for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key"):
            shutil.copy(self.pki.folder / name, folder / "certs" / name)
        config = load_config(folder / "tls.ini")
        assert config.tls is not None and config.tls.mode == "mutual"
        self.serve(with_control_port(config, 0))
        settings = TLSSettings(ca=folder / "certs" / "ca.pem", certificate=folder / "certs" / "client.pem",
                               key=folder / "certs" / "client.key")
        packets = yield threads.deferToThread(blocking_stream, self.port, settings, 5)
        self.assertEqual([p.packet_number for p in packets[:5]], [0, 1, 2, 3, 4])


def test_the_exposure_warning_knows_tls() -> None:
    from tia.server.guard import exposure_warning

    everywhere = "tcp:9000:interface=0.0.0.0"
    assert "no authentication or encryption" in (exposure_warning(everywhere) or "")
    assert "with TLS but without client certificates" in (exposure_warning(everywhere, "on") or "")
    assert exposure_warning(everywhere, "mutual") is None  # encrypted and authenticated
    assert exposure_warning("tcp:9000:interface=127.0.0.1", "on") is None
