"""[server], [subject] and [udp]: endpoints, input bounds, guard keys and TLS; ``--port``."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from tia.config.extras import missing_extra
from tia.config.model import DEFAULT_CONTROL, DEFAULT_PEER_TIMEOUT, Network, ServerConfig, TLSConfig, UDPConfig
from tia.config.reader import ConfigError, Section
from tia.protocol.endpoints import parse_description
from tia.protocol.metainfo import Subject
from tia.protocol.packet import SAMPLE_ORDERS

UDP_MODES = ("off", "unicast", "broadcast", "multicast")
STALL_POLICIES = ("catch-up", "skip")


class ServerKeys(NamedTuple):
    """What ``[server]`` sets, named as ``ServerConfig``'s fields."""

    control: str
    backlog_seconds: float
    max_line_length: int
    max_content_length: int
    idle_timeout: float
    peer_timeout: int
    max_connections: int
    max_connections_per_host: int
    allow: tuple[Network, ...]
    request_rate: int
    stall_policy: str
    sample_order: str
    tls: TLSConfig | None


def parse_server(section: Section) -> ServerKeys:
    control = section.text("control") or DEFAULT_CONTROL
    keys = ServerKeys(
        control=control,
        backlog_seconds=section.positive("backlog", 2.0),
        max_line_length=section.integer("max_line_length", 1024, 64, 1 << 20),
        max_content_length=section.integer("max_content_length", 1 << 20, 1024, 64 << 20),
        idle_timeout=_idle_timeout(section),
        peer_timeout=section.integer("peer_timeout", DEFAULT_PEER_TIMEOUT, 3, 86_400),
        max_connections=section.integer("max_connections", 64, 0, 100_000),
        max_connections_per_host=section.integer("max_connections_per_host", 0, 0, 100_000),
        allow=_allow(section),
        request_rate=section.integer("request_rate", 200, 0, 1_000_000),
        stall_policy=section.choice("stall_policy", "catch-up", STALL_POLICIES),
        sample_order=section.choice("sample_order", "channel-major", SAMPLE_ORDERS),
        tls=_parse_tls(section, control),
    )
    section.check_all_used()
    return keys


def parse_subject(section: Section) -> Subject:
    subject = Subject(
        section.text("id", "") or "",
        section.text("first_name", "") or "",
        section.text("surname", "") or "",
    )
    section.check_all_used()
    return subject


def parse_udp(section: Section) -> UDPConfig:
    mode = section.choice("mode", "unicast", UDP_MODES)
    address = section.text("address") or None
    port = section.integer("port", 0, 0, 65535)
    ttl = section.integer("ttl", 1, 0, 255)
    interface = section.text("interface") or None
    if mode in ("broadcast", "multicast"):
        if address is None:
            raise section.error("address", f"missing; {mode} needs the destination address")
        try:
            parsed = ipaddress.IPv4Address(address)
        except ValueError:
            raise section.error("address", f"{address!r} is not an IPv4 address") from None
        if mode == "multicast" and not parsed.is_multicast:
            raise section.error("address", f"{address} is not a multicast group (224.0.0.0/4)")
        if port == 0:
            raise section.error("port", f"missing; {mode} needs the destination UDP port")
    elif address is not None:
        raise section.error("address", f"only used with mode broadcast or multicast, not {mode}")
    section.check_all_used()
    return UDPConfig(mode, address, port, ttl, interface)


def _idle_timeout(section: Section) -> float:
    text = section.text("idle_timeout") or "60"
    try:
        idle = float(text)
    except ValueError:
        raise section.error("idle_timeout", f"{text!r} is not a number of seconds (0 = off)") from None
    if not 0 <= idle < float("inf"):
        raise section.error("idle_timeout", f"{text!r} must be 0 (off) or a positive number of seconds")
    return idle


def _allow(section: Section) -> tuple[Network, ...]:
    allow: list[Network] = []
    for item in (section.text("allow") or "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            allow.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise section.error(
                "allow", f"{item!r} is not a network such as 192.168.1.0/24 or 127.0.0.1 (comma-separated)"
            ) from None
    return tuple(allow)


def _parse_tls(section: Section, control: str) -> TLSConfig | None:
    """``tls_certificate``, ``tls_key``, ``tls_client_ca``: off unless a certificate is given.

    Paths are relative to the INI file, like a source's ``file``; the files are
    read and checked now (``tia.config.tls``), so a wrong one stops the start-up
    with its key named rather than the first client's handshake.
    """
    paths: dict[str, str | None] = {}
    for key in ("tls_certificate", "tls_key", "tls_client_ca"):
        text = section.text(key) or None
        if text is not None and section.path and not Path(text).expanduser().is_absolute():
            text = str(Path(section.path).parent / text)
        paths[key] = None if text is None else str(Path(text).expanduser())
    certificate = paths["tls_certificate"]
    if certificate is None:
        for key in ("tls_key", "tls_client_ca"):
            if paths[key] is not None:
                raise section.error(key, "needs tls_certificate (the server's certificate) to turn TLS on")
        return None
    if control.split(":", 1)[0].strip().lower() == "ssl":
        raise section.error("control", f"{control!r} is TLS already; with tls_certificate use a tcp: endpoint "
                                       "(tls_* covers the data and server-state ports too)")
    missing = missing_extra("OpenSSL", "TLS", "tls", package="pyOpenSSL")
    if missing is not None:
        raise section.error("tls_certificate", missing)
    from tia.config.tls import check_tls_files  # cryptography: there now, as pyOpenSSL needs it

    tls = TLSConfig(certificate, paths["tls_key"] or certificate, paths["tls_client_ca"])
    check_tls_files(tls, section.path)
    return tls


def endpoint_address(endpoint: str) -> str:
    """A server endpoint's port (TCP) or path (UNIX): its first positional argument, or ``port=`` / ``address=``."""
    return parse_description(endpoint).first("port", "address") or ""


def with_control_port(config: ServerConfig, port: int) -> ServerConfig:
    """The config with its control endpoint's port replaced (``--port``)."""
    parts = config.control.split(":")
    if parts[0] not in ("tcp", "tcp6") or len(parts) < 2:
        raise ConfigError(f"--port cannot change the endpoint {config.control!r}", config.path, "server", "control")
    for index, part in enumerate(parts[1:], start=1):
        if part.startswith("port="):
            parts[index] = f"port={port}"
            break
        if "=" not in part:
            parts[index] = str(port)
            break
    else:
        parts.insert(1, str(port))
    return replace(config, control=":".join(parts))
