"""[server] tls_*: reading and checking the PEM files when the configuration is loaded.

A wrong file stops the start-up with its key named, rather than the first
client's handshake. Needs ``cryptography`` (with pyOpenSSL, ``pip install
'txtia[tls]'``): only imported once a configuration turns TLS on.
``tia.server.tls`` builds the server's TLS context from what is read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from tia.config.model import TLSConfig
from tia.config.reader import ConfigError

PrivateKey = (
    rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
    | dsa.DSAPrivateKey
)


@dataclass(frozen=True)
class TLSIdentity:
    """What the PEM files hold: the server's chain (leaf first), its key, and the client CAs if any."""

    chain: list[x509.Certificate]
    key: PrivateKey
    client_authorities: list[x509.Certificate] | None


def read_tls_files(tls: TLSConfig, config_path: str | None = None) -> TLSIdentity:
    """The files' contents, or ``ConfigError`` naming ``[server]`` and the key whose file is wrong."""
    chain = _certificates(tls.certificate, "tls_certificate", config_path)
    key = _private_key(tls.key, tls.key == tls.certificate, config_path)
    if _public_der(key.public_key()) != _public_der(chain[0].public_key()):
        raise ConfigError(
            f"the private key in {tls.key} does not belong to the certificate in {tls.certificate}",
            config_path, "server", "tls_key",
        )
    authorities = None
    if tls.client_ca is not None:
        authorities = _certificates(tls.client_ca, "tls_client_ca", config_path)
    return TLSIdentity(chain, key, authorities)


def check_tls_files(tls: TLSConfig, config_path: str | None = None) -> None:
    """Raise ``ConfigError`` (naming ``[server]`` and the key) unless the files make a server identity."""
    read_tls_files(tls, config_path)


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


def _private_key(path: str, in_certificate: bool, config_path: str | None) -> PrivateKey:
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
