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

from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocolFactory, IReactorTime
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.failure import Failure

from tia.config import TLSConfig
from tia.config.tls import read_tls_files
from tia.protocol.control import build_error
from tia.server.guard import ConnectionGuard

HANDSHAKE_TIMEOUT = 10.0  # seconds: a peer that connects but never finishes the handshake holds a slot
PLAIN_CLIENT_REPLY = build_error(
    "this server requires TLS (a txtia extension): connect with TLS, e.g. TiAClient(..., tls=TLSSettings(ca=...))"
)


def server_options(tls: TLSConfig, config_path: str | None = None) -> ssl.CertificateOptions:
    """The one server context of the daemon: TLS 1.2 or later, client certificates when configured.

    The files are read and checked by ``tia.config.tls`` (``ConfigError`` naming the key at fault).
    """
    identity = read_tls_files(tls, config_path)
    extra: dict[str, Any] = {}
    if identity.client_authorities is not None:
        extra["trustRoot"] = ssl.trustRootFromCertificates(
            [ssl.Certificate(crypto.X509.from_cryptography(c)) for c in identity.client_authorities]
        )
    # cryptography objects, which pyOpenSSL takes (its own X509/PKey are deprecated); Twisted's
    # annotations still name the pyOpenSSL types, hence the untyped keywords
    chain = identity.chain
    credentials: dict[str, Any] = {"privateKey": identity.key, "certificate": chain[0], "extraCertChain": chain[1:]}
    return ssl.CertificateOptions(
        **credentials,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        **extra,
    )


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
