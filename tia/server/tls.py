"""Opt-in TLS for the control, data and server-state connections (a txtia extension).

TiA 1.0 has neither encryption nor authentication. With ``[server]
tls_certificate`` set, every TCP port the daemon opens for clients speaks TLS
with one server context, and with ``tls_client_ca`` clients must present a
certificate signed by that CA (mutual TLS). The ports are wrapped, not
rewritten: ``TLSServerFactory`` puts a TLS layer in front of the existing
factories, so the allow-list, the one-shot data port and the connection limits
still decide in ``buildProtocol``, before any handshake is spent on a refused
peer. Needs pyOpenSSL (``pip install 'txtia[tls]'``); nothing imports this
module while TLS is off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocolFactory, IReactorTime
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.failure import Failure

from tia.config import ConfigError, TLSConfig
from tia.protocol.control import build_error
from tia.server.guard import ConnectionGuard

HANDSHAKE_TIMEOUT = 10.0  # seconds: a peer that connects but never finishes the handshake holds a slot
PLAIN_CLIENT_REPLY = build_error(
    "this server requires TLS (a txtia extension): connect with TLS, e.g. TiAClient(..., tls=TLSSettings(ca=...))"
)


def check_tls_files(tls: TLSConfig, config_path: str | None = None) -> None:
    """Raise ``ConfigError`` (naming ``[server]`` and the key) unless the files make a server context."""
    server_options(tls, config_path)


def server_options(tls: TLSConfig, config_path: str | None = None) -> ssl.CertificateOptions:
    """The one server context of the daemon: TLS 1.2 or later, client certificates when configured."""
    chain = _certificates(tls.certificate, "tls_certificate", config_path)
    key = _private_key(tls.key, tls.key == tls.certificate, config_path)
    if _public_der(key.public_key()) != _public_der(chain[0].public_key()):
        raise ConfigError(
            f"the private key in {tls.key} does not belong to the certificate in {tls.certificate}",
            config_path, "server", "tls_key",
        )
    extra: dict[str, Any] = {}
    if tls.client_ca is not None:
        authorities = _certificates(tls.client_ca, "tls_client_ca", config_path)
        extra["trustRoot"] = ssl.trustRootFromCertificates(
            [ssl.Certificate(crypto.X509.from_cryptography(c)) for c in authorities]
        )
    # cryptography objects, which pyOpenSSL takes (its own X509/PKey are deprecated); Twisted's
    # annotations still name the pyOpenSSL types, hence the untyped keywords
    identity: dict[str, Any] = {"privateKey": key, "certificate": chain[0], "extraCertChain": chain[1:]}
    return ssl.CertificateOptions(
        **identity,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        **extra,
    )


def _read(path: str, key: str, config_path: str | None) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}", config_path, "server", key) from None


def _certificates(path: str, key: str, config_path: str | None) -> list[x509.Certificate]:
    data = _read(path, key, config_path)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise ConfigError(
            f"{path} is not a PEM certificate (-----BEGIN CERTIFICATE-----)", config_path, "server", key
        )
    return certificates


_KeyTypes = (
    rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
    | dsa.DSAPrivateKey
)


def _private_key(path: str, in_certificate: bool, config_path: str | None) -> _KeyTypes:
    data = _read(path, "tls_key", config_path)
    if b"PRIVATE KEY-----" not in data:
        where = f"the certificate file {path} holds no private key; set tls_key" if in_certificate else (
            f"{path} is not a PEM private key (-----BEGIN PRIVATE KEY-----)"
        )
        raise ConfigError(where, config_path, "server", "tls_key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            f"the private key in {path} is encrypted; the daemon starts unattended, so store it "
            "unencrypted and readable only by the server's user (openssl pkey -in IN -out OUT)",
            config_path, "server", "tls_key",
        ) from None
    except (ValueError, UnsupportedAlgorithm) as error:
        raise ConfigError(f"{path}: not a usable private key: {error}", config_path, "server", "tls_key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
                      | ed448.Ed448PrivateKey | dsa.DSAPrivateKey):
        raise ConfigError(
            f"{path}: a {type(key).__name__} cannot sign TLS handshakes; use an RSA or EC key",
            config_path, "server", "tls_key",
        )
    return key


def _public_der(key: Any) -> bytes:
    der: bytes = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


class _ServerTLSConnection(BufferingTLSTransport):
    """A server-side TLS connection that must finish its handshake in time; failures are logged."""

    factory: TLSServerFactory
    _handshake_timer: IDelayedCall | None = None
    _received = False

    def makeConnection(self, transport: Any) -> None:
        self._handshake_timer = self.factory.reactor.callLater(
            self.factory.handshake_timeout, self._handshake_overdue
        )
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        if not self._received and data[:1] == b"T" and self.factory.channel == "control":
            self._refuse_plain_client()  # "TiA 1.0": no TLS record starts with 'T' (0x54)
            return
        self._received = True
        super().dataReceived(data)
        if self._handshakeDone and self._handshake_timer is not None:  # Twisted's own flag
            self._cancel_timer()

    def _refuse_plain_client(self) -> None:
        """Tell a plain TiA 1.0 client why, in plain TiA, instead of a TLS alert it cannot read."""
        assert self.transport is not None
        self.factory.refusals.emit(
            ("tls plain", self._peer_host()),
            "refused a plain TiA control connection from {host}: this server speaks TLS only",
            host=self._peer_host(),
        )
        self._cancel_timer()
        self.transport.write(PLAIN_CLIENT_REPLY)
        self.transport.loseConnection()

    def _handshake_overdue(self) -> None:
        self._handshake_timer = None
        if self._handshakeDone or self.disconnecting:
            return
        self.factory.refusals.emit(
            ("tls timeout", self.factory.channel, self._peer_host()),
            "closed a {channel} connection from {host}: no TLS handshake within {seconds:g} s",
            channel=self.factory.channel, host=self._peer_host(), seconds=self.factory.handshake_timeout,
        )
        self.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        failure: Failure = self._reason or reason
        if not self._handshakeDone and failure.check(SSL.Error):
            self.factory.refusals.emit(
                ("tls failed", self.factory.channel, self._peer_host()),
                "TLS handshake of a {channel} connection from {host} failed: {reason} "
                "(a plain TiA 1.0 client, or a certificate the server does not accept)",
                channel=self.factory.channel, host=self._peer_host(), reason=failure.getErrorMessage(),
            )
        super().connectionLost(reason)

    def _cancel_timer(self) -> None:
        timer, self._handshake_timer = self._handshake_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _peer_host(self) -> str:
        transport = self.transport
        return str(getattr(transport.getPeer(), "host", "?")) if transport is not None else "?"


class TLSServerFactory(TLSMemoryBIOFactory, ServerFactory):
    """``wrapped`` behind TLS; a connection it refuses (``None``) is closed before any handshake."""

    protocol = _ServerTLSConnection
    noisy = False

    def __init__(
        self,
        options: ssl.CertificateOptions,
        wrapped: IProtocolFactory,
        reactor: IReactorTime,
        guard: ConnectionGuard,
        channel: str,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        super().__init__(options, False, wrapped, clock=reactor)
        self.reactor = reactor
        self.refusals = guard.log
        self.channel = channel
        self.handshake_timeout = handshake_timeout

    def buildProtocol(self, addr: IAddress | None) -> _ServerTLSConnection | None:  # type: ignore[override]
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return self.protocol(self, wrapped)


class ServerTLS:
    """The daemon's TLS: one context, and the wrapper every client-facing TCP factory goes through."""

    def __init__(self, config: TLSConfig, reactor: IReactorTime, guard: ConnectionGuard,
                 config_path: str | None = None) -> None:
        self.config = config
        self.options = server_options(config, config_path)
        self.reactor = reactor
        self.guard = guard

    def wrap(self, factory: IProtocolFactory, channel: str) -> TLSServerFactory:
        return TLSServerFactory(self.options, factory, self.reactor, self.guard, channel)
