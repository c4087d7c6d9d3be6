"""TLS settings of both clients, for a server with ``[server] tls_certificate`` (a txtia extension).

TiA 1.0 peers speak plain TCP; a txtia server with TLS on encrypts control,
data and server-state connections, and with ``tls_client_ca`` also wants a
client certificate. One ``TLSSettings`` serves the blocking client (stdlib
:mod:`ssl`, via :meth:`TLSSettings.ssl_context`) and the Twisted client
(:func:`twisted_options`); Twisted is imported only by the latter, so the
blocking client stays free of it.
"""

from __future__ import annotations

import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

__all__ = ["TLSSettings", "twisted_options"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class TLSSettings:
    """How a client verifies the server and, for mutual TLS, proves who it is.

    ``ca``: PEM file of the CA(s) that signed the server's certificate (None:
    the system's trust store). ``certificate`` and ``key``: this client's PEM
    certificate and private key, for a server with ``tls_client_ca`` (``key``
    defaults to the certificate file). ``server_name``: the name the server's
    certificate must carry, when it is not the host connected to (an IP
    address is checked against the certificate's IP addresses).
    """

    ca: PathLike | None = None
    certificate: PathLike | None = None
    key: PathLike | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if self.key is not None and self.certificate is None:
            raise ValueError("TLSSettings: a key without a certificate; give certificate= too")

    def name_for(self, host: str) -> str:
        """The name the server's certificate is checked against when connecting to ``host``."""
        return self.server_name or host

    def ssl_context(self) -> ssl.SSLContext:
        """A stdlib client context: TLS 1.2 or later, the server's certificate and name verified."""
        try:
            context = ssl.create_default_context(cafile=_text(self.ca))
        except (OSError, ssl.SSLError) as error:
            raise ValueError(f"TLSSettings.ca: cannot load {self.ca}: {_reason(error)}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.certificate is not None:
            try:
                context.load_cert_chain(_path(self.certificate), _text(self.key))
            except (OSError, ssl.SSLError) as error:
                raise ValueError(
                    f"TLSSettings.certificate/key: cannot load {self.certificate}"
                    f"{'' if self.key is None else ' with ' + str(self.key)}: {_reason(error)}"
                ) from None
        return context


def secure_socket(sock: socket.socket, context: ssl.SSLContext, server_name: str) -> ssl.SSLSocket:
    """``sock`` after a client TLS handshake (within the socket's timeout); closed if that fails."""
    try:
        return context.wrap_socket(sock, server_hostname=server_name)
    except BaseException:
        sock.close()
        raise


def twisted_options(settings: TLSSettings, host: str) -> IOpenSSLClientConnectionCreator:
    """Twisted client TLS options for connecting to ``host`` with ``settings`` (needs pyOpenSSL)."""
    from cryptography import x509
    from OpenSSL import crypto
    from twisted.internet import ssl as twisted_ssl

    trust: Any = None  # None: optionsForClientTLS uses the platform's trust store
    if settings.ca is not None:
        data = _read(settings.ca, "ca")
        try:
            authorities = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise ValueError(f"TLSSettings.ca: {settings.ca} is not a PEM certificate") from None
        trust = twisted_ssl.trustRootFromCertificates(
            [twisted_ssl.Certificate(crypto.X509.from_cryptography(c)) for c in authorities]
        )
    client: Any = None
    if settings.certificate is not None:
        pem = _read(settings.certificate, "certificate")
        if settings.key is not None:
            pem += b"\n" + _read(settings.key, "key")
        try:
            client = twisted_ssl.PrivateCertificate.loadPEM(pem)
        except Exception as error:  # pyOpenSSL's errors carry no common base with ValueError
            raise ValueError(f"TLSSettings.certificate/key: cannot load {settings.certificate}: {error}") from None
    options: IOpenSSLClientConnectionCreator = twisted_ssl.optionsForClientTLS(
        settings.name_for(host), trustRoot=trust, clientCertificate=client
    )
    return options


def _path(value: PathLike) -> str:
    return str(Path(value).expanduser())


def _text(value: PathLike | None) -> str | None:
    return None if value is None else _path(value)


def _read(value: PathLike, field: str) -> bytes:
    try:
        return Path(_path(value)).read_bytes()
    except OSError as error:
        raise ValueError(f"TLSSettings.{field}: cannot read {value}: {_reason(error)}") from None


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or getattr(error, "reason", None) or str(error)
