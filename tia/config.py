"""Server configuration: INI file -> validated, immutable objects.

Every problem is reported with the file, section and key at fault and what
was expected, and the daemon refuses to start rather than guess: unknown keys
are errors too, because a typo that silently does nothing costs a recording.
"""

from __future__ import annotations

import configparser
import ipaddress
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

from tia.protocol.metainfo import Subject
from tia.protocol.packet import MAX_UDP_PAYLOAD, packet_size
from tia.protocol.signals import SignalType, UnknownSignalType, by_name
from tia.sources import DRIVERS, Driver, find_driver, parse_path
from tia.sources.base import (
    ON_ERROR_POLICIES,
    ChannelSpec,
    OptionError,
    SourceDescription,
    SourceError,
    SourceSpec,
)
from tia.sources.plugins import PluginError
from tia.sources.synthetic import WAVES

DEFAULT_CONTROL = "tcp:9000:interface=127.0.0.1"
UDP_MODES = ("off", "unicast", "broadcast", "multicast")
SOURCE_PREFIX = "source:"
GENERIC_SOURCE_KEYS = ("driver", "type", "channels", "rate", "blocksize", "on_error")
EVENT_ENDPOINT_KINDS = ("tcp", "tcp6", "unix")
STALL_POLICIES = ("catch-up", "skip")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(ValueError):
    """A configuration the server will not start with."""

    def __init__(
        self, message: str, path: str | None = None, section: str | None = None, key: str | None = None
    ) -> None:
        self.path, self.section, self.key, self.message = path, section, key, message
        where = []
        if path:
            where.append(str(path))
        if section:
            where.append(f"[{section}]")
        if key:
            where.append(key)
        super().__init__((" ".join(where) + ": " if where else "") + message)


@dataclass(frozen=True)
class UDPConfig:
    """How UDP data goes out: to each requesting client, or to one broadcast/multicast address."""

    mode: str = "unicast"
    address: str | None = None
    port: int = 0
    ttl: int = 1
    interface: str | None = None


@dataclass(frozen=True)
class RecordingConfig:
    """[recording]: the server records what it sends (tia.server.recorder); off by default."""

    enabled: bool = False  # record from start-up; StartRecording / 'tia recording start' at run time
    directory: str = "recordings"  # relative to the daemon's working directory
    pattern: str = "{date}_{subject}_run{run:02d}"
    formats: tuple[str, ...] = ("bdf", "raw")
    flush_interval: float = 1.0  # seconds: what a crash can lose at most
    queue_seconds: float = 10.0  # how far the writer may fall behind before packets are dropped
    control: bool = True  # control clients may start and stop recordings


@dataclass(frozen=True)
class LSLOutletConfig:
    """[lsl]: every signal also published as a Lab Streaming Layer outlet (tia.lsl_bridge)."""

    outlets: bool = False
    name: str = "TiA"  # stream names are NAME-TYPE, e.g. TiA-eeg
    source_id: str = ""  # default: txtia@HOST:CONTROL-ENDPOINT; each stream adds /TYPE
    queue_seconds: float = 10.0


@dataclass(frozen=True)
class TLSConfig:
    """[server] tls_*: absolute paths of PEM files, checked when the configuration is loaded."""

    certificate: str  # the server's certificate chain, leaf first
    key: str  # its private key (may be the certificate file)
    client_ca: str | None = None  # set: clients must present a certificate signed by it (mutual TLS)

    @property
    def mode(self) -> str:
        """``on`` (encrypted) or ``mutual`` (encrypted, clients authenticated)."""
        return "mutual" if self.client_ca else "on"


@dataclass(frozen=True)
class ServerConfig:
    sources: tuple[SourceSpec, ...]
    subject: Subject = field(default_factory=Subject)
    control: str = DEFAULT_CONTROL
    udp: UDPConfig = field(default_factory=UDPConfig)
    backlog_seconds: float = 2.0
    max_line_length: int = 1024
    max_content_length: int = 1 << 20
    path: str | None = None
    events_endpoint: str | None = None  # [events] endpoint: where other programs post events
    web_endpoint: str | None = None  # [web] endpoint or --web: the live monitor (tia.web), off by default
    # defences against hostile or broken peers (tia.server.guard); 0 switches a limit off
    idle_timeout: float = 60.0  # seconds a control connection without data connection may stay silent
    max_connections: int = 64  # control connections at once (and server-state connections)
    max_connections_per_host: int = 0  # the same, from one peer address
    allow: tuple[Network, ...] = ()  # client networks allowed to connect; empty: everyone
    request_rate: int = 200  # control requests per second per connection (bursts of as many)
    stall_policy: str = "catch-up"  # after a stalled reactor: send every missed tick, or skip them
    recording: RecordingConfig = field(default_factory=RecordingConfig)  # [recording]
    lsl: LSLOutletConfig = field(default_factory=LSLOutletConfig)  # [lsl] outlets
    tls: TLSConfig | None = None  # [server] tls_*: control, data and state connections over TLS; off by default

    @property
    def master(self) -> SourceSpec:
        """The first periodic source: its rate and block size set the packet rate."""
        return next(s for s in self.sources if not s.aperiodic)

    @property
    def packet_rate(self) -> Fraction:
        return self.master.packet_rate


class _Guards(NamedTuple):
    idle_timeout: float
    max_connections: int
    max_connections_per_host: int
    allow: tuple[Network, ...]
    request_rate: int
    stall_policy: str


# ---------------------------------------------------------------- parsing helpers


class _Section:
    """One INI section whose keys are consumed as they are read; leftovers are errors."""

    def __init__(self, path: str | None, name: str, items: Mapping[str, str]) -> None:
        self.path, self.name = path, name
        self._items = dict(items)
        self._used: set[str] = set()

    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(message, self.path, self.name, key)

    def has(self, key: str) -> bool:
        return key in self._items

    def text(self, key: str, default: str | None = None) -> str | None:
        self._used.add(key)
        value = self._items.get(key)
        if value is None:
            return default
        return value.strip()

    def required(self, key: str, expected: str) -> str:
        value = self.text(key)
        if not value:
            raise self.error(key, f"missing; expected {expected}")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.text(key)
        if value is None or value == "":
            return default
        try:
            number = int(value)
        except ValueError:
            raise self.error(key, f"{value!r} is not an integer") from None
        if not low <= number <= high:
            raise self.error(key, f"{number} is out of range {low}..{high}")
        return number

    def positive(self, key: str, default: float) -> float:
        value = self.text(key)
        if value is None or value == "":
            return default
        try:
            number = float(value)
        except ValueError:
            raise self.error(key, f"{value!r} is not a number") from None
        if not number > 0 or number == float("inf"):
            raise self.error(key, f"{value!r} must be a positive number")
        return number

    def choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        value = (self.text(key) or default).lower()
        if value not in choices:
            raise self.error(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def check_all_used(self, extra: str = "") -> None:
        unknown = sorted(set(self._items) - self._used)
        if unknown:
            raise self.error(unknown[0], f"unknown key{extra}")

    def remaining(self) -> list[str]:
        return [key for key in self._items if key not in self._used]


def _parse_rate(section: _Section, key: str) -> Fraction:
    text = section.required(key, "a sampling rate in Hz, e.g. 512")
    try:
        rate = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise section.error(key, f"{text!r} is not a number") from None
    if rate <= 0:
        raise section.error(key, f"{text!r} must be positive")
    return rate


def _parse_channels(section: _Section, default_type: str | None) -> tuple[ChannelSpec, ...]:
    text = section.required(
        "channels", "a channel count (e.g. 16) or labels (e.g. Fp1, Fp2, HEOG:eog)"
    )
    type_name = default_type
    if text.isdigit():
        count = int(text)
        if not 1 <= count <= 0xFFFF:
            raise section.error("channels", f"{count} is out of range 1..65535")
        if type_name is None:
            raise section.error("type", "missing; expected the TiA signal type of the channels")
        try:
            signal_type = by_name(type_name)
        except UnknownSignalType as error:
            raise section.error("type", str(error)) from None
        return tuple(ChannelSpec(f"{signal_type.name}{n}", signal_type) for n in range(1, count + 1))

    channels = []
    for item in text.split(","):
        label, colon, channel_type = item.strip().rpartition(":")
        if not colon:
            label, channel_type = channel_type, ""
        label, channel_type = label.strip(), channel_type.strip()
        if not label:
            raise section.error("channels", f"empty channel label in {text!r}")
        chosen = channel_type or type_name
        if not chosen:
            raise section.error(
                "type", f"missing; channel {label!r} has no type (write {label}:eeg or set type)"
            )
        try:
            signal_type = by_name(chosen)
        except UnknownSignalType as error:
            key = "channels" if channel_type else "type"
            raise section.error(key, str(error)) from None
        channels.append(ChannelSpec(label, signal_type))
    if len(channels) > 0xFFFF:
        raise section.error("channels", "more than 65535 channels")
    return tuple(channels)


def _parse_source(section: _Section) -> SourceSpec:
    name = section.name[len(SOURCE_PREFIX):].strip()
    if not name:
        raise section.error(None, "a source section needs a name: [source:NAME]")
    driver_name = section.required("driver", f"one of {', '.join(DRIVERS)}")
    try:
        driver = find_driver(driver_name)
    except PluginError as error:
        raise section.error("driver", str(error)) from None
    if driver is None:
        raise section.error(
            "driver", f"unknown driver {driver_name!r}; known: {', '.join(DRIVERS)} (or a tia.sources entry point)"
        )
    type_text = section.text("type")
    listed = _parse_channels(section, type_text) if section.has("channels") or driver.describe is None else None
    options = _parse_options(section, driver, driver_name)
    described_rate: Fraction | None = None
    if driver.describe is not None:
        described = _describe(section, driver, options, listed, type_text)
        channels, described_rate = described.channels, described.sampling_rate
    else:
        assert listed is not None
        channels = listed
    aperiodic = {c.type.aperiodic for c in channels}
    if len(aperiodic) > 1 or (True in aperiodic and len({c.type for c in channels}) > 1):
        raise section.error(
            "channels",
            "an aperiodic type (button, axis, keycode, mouse-button, event) must be the only "
            "type of its source; put periodic and aperiodic channels in separate sources",
        )
    is_aperiodic = aperiodic == {True}
    if driver.periodic is True and is_aperiodic:
        raise section.error("driver", f"driver {driver_name!r} only feeds periodic signal types")
    if driver.periodic is False and not is_aperiodic:
        raise section.error(
            "driver", f"driver {driver_name!r} only feeds aperiodic types (button, axis, keycode, event)"
        )

    if is_aperiodic:
        # polled once per master tick; rate and block size are the packet grid's
        for key in ("rate", "blocksize"):
            if section.text(key):
                raise section.error(key, "aperiodic sources are polled once per packet; remove it")
        rate = Fraction(1)  # replaced by the packet rate once the master is known
        block_size = 1
    elif described_rate is not None and not section.text("rate"):
        rate = described_rate  # the file's or device's own rate
        block_size = section.integer("blocksize", 1, 1, 0xFFFF)
    else:
        rate = _parse_rate(section, "rate")
        if described_rate is not None and rate != described_rate:
            raise section.error(
                "rate", f"{_fmt(rate)} Hz, but the {driver_name} source runs at {_fmt(described_rate)} Hz "
                "(nothing is resampled); remove rate, it comes from the file or device"
            )
        block_size = section.integer("blocksize", 1, 1, 0xFFFF)

    on_error = section.choice("on_error", "stop-signal", ON_ERROR_POLICIES)
    spec = SourceSpec(name, driver_name, rate, block_size, channels, options, on_error)
    try:
        driver.factory(spec)  # drivers check their options (count per channel...) when built
    except OptionError as error:
        raise section.error(error.key, str(error)) from None
    except Exception as error:
        raise section.error(None, f"driver {driver_name!r} rejects this source: {error}") from None
    return spec


def _parse_options(section: _Section, driver: Driver, driver_name: str) -> dict[str, object]:
    """The driver's own keys, each through its parser; a path is relative to the INI file."""
    options: dict[str, object] = {}
    for key in section.remaining():
        if key in GENERIC_SOURCE_KEYS:
            continue
        parser = driver.options.get(key)
        if parser is None:
            known = ", ".join(sorted(driver.options)) or "none"
            raise section.error(key, f"unknown key for driver {driver_name!r} (its options: {known})")
        text = section.text(key) or ""
        try:
            value = parser(text)
        except (ValueError, SourceError) as error:
            raise section.error(key, f"invalid value {text!r}: {error}") from None
        if parser is parse_path and isinstance(value, Path) and not value.is_absolute() and section.path:
            value = Path(section.path).parent / value
        options[key] = value
    return options


def _describe(
    section: _Section, driver: Driver, options: dict[str, object],
    listed: tuple[ChannelSpec, ...] | None, type_text: str | None,
) -> SourceDescription:
    """Ask the driver what its file or device has (rate, channels), naming the key at fault."""
    assert driver.describe is not None
    default_type: SignalType | None = None
    if type_text:
        try:
            default_type = by_name(type_text)
        except UnknownSignalType as error:
            raise section.error("type", str(error)) from None
    try:
        return driver.describe(options, listed, default_type)
    except OptionError as error:
        raise section.error(error.key, str(error)) from None
    except (ValueError, OSError, SourceError) as error:
        raise section.error(None, f"driver {driver.name!r}: {error}") from None


def _parse_udp(section: _Section) -> UDPConfig:
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
    return UDPConfig(mode, address, port, ttl, interface)


def load_config(path: str | Path) -> ServerConfig:
    """Read and validate a server INI file."""
    path_text = str(path)
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=(";", "#"), strict=True, empty_lines_in_values=False
    )
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise ConfigError("file not found", path_text) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read: {error}", path_text) from None
    except configparser.Error as error:
        raise ConfigError(" ".join(str(error).split()), path_text) from None
    return parse_config(parser, path_text)


def parse_config(parser: configparser.ConfigParser, path: str | None = None) -> ServerConfig:
    sections = {name: _Section(path, name, parser[name]) for name in parser.sections()}
    known = {"server", "subject", "udp", "events", "web", "recording", "lsl"}
    for name in sections:
        if name not in known and not name.startswith(SOURCE_PREFIX):
            raise ConfigError(
                "unknown section (expected [server], [subject], [udp], [events], [web], [recording], [lsl] "
                "or [source:NAME])", path, name
            )

    server = sections.get("server") or _Section(path, "server", {})
    subject_section = sections.get("subject") or _Section(path, "subject", {})
    udp_section = sections.get("udp") or _Section(path, "udp", {})
    subject = Subject(
        subject_section.text("id", "") or "",
        subject_section.text("first_name", "") or "",
        subject_section.text("surname", "") or "",
    )
    subject_section.check_all_used()
    control = server.text("control") or DEFAULT_CONTROL
    backlog = server.positive("backlog", 2.0)
    max_line = server.integer("max_line_length", 1024, 64, 1 << 20)
    max_content = server.integer("max_content_length", 1 << 20, 1024, 64 << 20)
    guards = _parse_guards(server)
    tls = _parse_tls(server, control)
    server.check_all_used()
    udp = _parse_udp(udp_section)
    udp_section.check_all_used()
    events_section = sections.get("events") or _Section(path, "events", {})
    events_endpoint = _parse_events(events_section)
    events_section.check_all_used()

    source_sections = [s for name, s in sections.items() if name.startswith(SOURCE_PREFIX)]
    if not source_sections:
        raise ConfigError("no [source:NAME] section: the server would have nothing to send", path)
    specs = _with_aperiodic_rates([_parse_source(section) for section in source_sections])
    for section in source_sections:
        section.check_all_used()
    _check_injected(specs, events_endpoint, path)
    config = ServerConfig(
        tuple(specs), subject, control, udp, backlog, max_line, max_content, path, events_endpoint,
        idle_timeout=guards.idle_timeout, max_connections=guards.max_connections, allow=guards.allow,
        request_rate=guards.request_rate, stall_policy=guards.stall_policy,
        max_connections_per_host=guards.max_connections_per_host, tls=tls,
    )
    config = replace(config, web_endpoint=_parse_web(sections.get("web") or _Section(path, "web", {})))
    config = _with_sinks(config, sections, path)
    validate(config)
    return config


def _parse_guards(section: _Section) -> _Guards:
    """[server] idle_timeout, max_connections(_per_host), allow, request_rate and stall_policy."""
    idle_text = section.text("idle_timeout") or "60"
    try:
        idle = float(idle_text)
    except ValueError:
        raise section.error("idle_timeout", f"{idle_text!r} is not a number of seconds (0 = off)") from None
    if not 0 <= idle < float("inf"):
        raise section.error("idle_timeout", f"{idle_text!r} must be 0 (off) or a positive number of seconds")
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
    return _Guards(
        idle_timeout=idle,
        max_connections=section.integer("max_connections", 64, 0, 100_000),
        max_connections_per_host=section.integer("max_connections_per_host", 0, 0, 100_000),
        allow=tuple(allow),
        request_rate=section.integer("request_rate", 200, 0, 1_000_000),
        stall_policy=section.choice("stall_policy", "catch-up", STALL_POLICIES),
    )


def _parse_tls(section: _Section, control: str) -> TLSConfig | None:
    """[server] tls_certificate, tls_key, tls_client_ca: off unless a certificate is given.

    Paths are relative to the INI file, like a source's ``file``; the files are
    read and checked now (tia.server.tls), so a wrong one stops the start-up
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
    tls = TLSConfig(certificate, paths["tls_key"] or certificate, paths["tls_client_ca"])
    try:
        from tia.server.tls import check_tls_files
    except ImportError:
        raise section.error(
            "tls_certificate", "TLS needs pyOpenSSL: pip install 'txtia[tls]'"
        ) from None
    check_tls_files(tls, section.path)
    return tls


def _parse_events(section: _Section) -> str | None:
    """``[events] endpoint``: off by default; a Twisted server endpoint string."""
    endpoint = section.text("endpoint") or "off"
    if endpoint.lower() in ("off", "none", "no"):
        return None
    if endpoint.split(":", 1)[0] not in EVENT_ENDPOINT_KINDS:
        raise section.error(
            "endpoint", f"{endpoint!r} is not a server endpoint such as tcp:9100:interface=127.0.0.1 (or off)"
        )
    return endpoint


# ---------------------------------------------------------------- [web]: the live monitor (tia.web)

WEB_ENDPOINT_KINDS = ("tcp", "tcp6", "unix")


def parse_web_endpoint(
    text: str, path: str | None = None, section: str | None = None, key: str | None = "--web"
) -> str | None:
    """``off`` or a server endpoint; TCP without ``interface=`` binds loopback, not every interface.

    A bare port (``8080``) means ``tcp:8080``. The page shows raw biosignals and
    who is connected, without authentication: exposing it must be written out.
    """
    endpoint = text.strip()
    if endpoint.lower() in ("", "off", "none", "no"):
        return None
    if endpoint.isdigit():
        endpoint = f"tcp:{endpoint}"
    kind, _, rest = endpoint.partition(":")
    if kind not in WEB_ENDPOINT_KINDS or not rest:
        raise ConfigError(
            f"{text!r} is not a server endpoint such as tcp:8080 or tcp:8080:interface=127.0.0.1 (or off)",
            path, section, key,
        )
    if kind == "unix":
        return endpoint
    parts = rest.replace("\\:", "\0").split(":")
    ports = [p.removeprefix("port=") for p in parts if "=" not in p or p.startswith("port=")]
    port_text = ports[0] if ports else ""
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"{text!r}: {port_text!r} is not a TCP port", path, section, key)
    if not any(p.startswith("interface=") for p in parts):
        endpoint += ":interface=127.0.0.1" if kind == "tcp" else ":interface=\\:\\:1"
    return endpoint


def _parse_web(section: _Section) -> str | None:
    """``[web] endpoint``: off by default."""
    endpoint = parse_web_endpoint(section.text("endpoint") or "off", section.path, section.name, "endpoint")
    section.check_all_used()
    return endpoint


def _check_injected(specs: Sequence[SourceSpec], endpoint: str | None, path: str | None) -> None:
    injected = [s for s in specs if s.driver == "injected"]
    if endpoint is not None and not injected:
        raise ConfigError(
            "no [source:NAME] with driver = injected receives the posted events "
            "(add one, e.g. channels = trigger:event)", path, "events", "endpoint",
        )
    if endpoint is None and injected:
        raise ConfigError(
            "driver = injected receives events through [events] endpoint, which is off "
            "(set e.g. endpoint = tcp:9100:interface=127.0.0.1)", path, f"{SOURCE_PREFIX}{injected[0].name}", "driver",
        )


def _with_aperiodic_rates(specs: Sequence[SourceSpec]) -> list[SourceSpec]:
    """Aperiodic sources are polled once per packet: their rate is the packet rate."""
    periodic = [s for s in specs if not s.aperiodic]
    if not periodic:
        return list(specs)
    rate = periodic[0].packet_rate
    return [replace(s, sampling_rate=rate, block_size=1) if s.aperiodic else s for s in specs]


def validate(config: ServerConfig) -> None:
    """Cross-source rules: one master packet rate, one rate per signal type, UDP size."""
    path = config.path
    periodic = [s for s in config.sources if not s.aperiodic]
    if not periodic:
        raise ConfigError(
            "no periodic source: a periodic signal (eeg, emg, ...) sets the packet rate", path
        )
    names = [s.name for s in config.sources]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"two sources are named {name!r}", path, f"{SOURCE_PREFIX}{name}")
    master = periodic[0]
    for spec in periodic[1:]:
        if spec.packet_rate != master.packet_rate:
            raise ConfigError(
                f"rate / blocksize = {_fmt(spec.packet_rate)} packets/s, but the master source "
                f"[{SOURCE_PREFIX}{master.name}] sends {_fmt(master.packet_rate)} packets/s "
                f"({_fmt(master.sampling_rate)} Hz / {master.block_size}); every periodic signal "
                "must cover the same time per packet",
                path, f"{SOURCE_PREFIX}{spec.name}", "blocksize",
            )
    owners: dict[int, SourceSpec] = {}
    for spec in config.sources:
        for channel in spec.channels:
            other = owners.setdefault(channel.type.flag, spec)
            if other is not spec and (
                other.sampling_rate != spec.sampling_rate or other.block_size != spec.block_size
                or spec.aperiodic
            ):
                raise ConfigError(
                    f"signal type {channel.type.name!r} is also fed by [{SOURCE_PREFIX}{other.name}] "
                    "with another rate or block size (or is aperiodic); one signal type has one "
                    "rate and block size",
                    path, f"{SOURCE_PREFIX}{spec.name}", "channels",
                )
    if config.udp.mode != "off":
        shapes: dict[int, tuple[int, int]] = {}
        for spec in config.sources:
            for channel in spec.channels:
                count, block = shapes.get(channel.type.flag, (0, spec.block_size))
                shapes[channel.type.flag] = (count + 1, block)
        largest = packet_size(list(shapes.values()))
        if largest > MAX_UDP_PAYLOAD:
            raise ConfigError(
                f"a packet with every signal is {largest} bytes, more than one UDP datagram "
                f"carries ({MAX_UDP_PAYLOAD}); set mode = off or use smaller blocks",
                path, "udp", "mode",
            )


def _fmt(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"


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


def sources_from_signal_options(values: Sequence[str]) -> tuple[SourceSpec, ...]:
    """Synthetic sources from ``--signal TYPE:CHANNELS:RATE:BLOCKSIZE[:WAVE]``; the first is master."""
    waves = list(WAVES)
    specs = []
    for index, value in enumerate(values, start=1):
        parts = value.split(":")
        if len(parts) not in (4, 5):
            raise ConfigError(f"{value!r} is not TYPE:CHANNELS:RATE:BLOCKSIZE[:WAVE]", key="--signal")
        type_name, channel_text, rate_text, block_text = parts[:4]
        wave = parts[4] if len(parts) == 5 else "sine"
        if wave not in waves:
            raise ConfigError(f"{value!r}: WAVE {wave!r} is not one of {', '.join(waves)}", key="--signal")
        try:
            signal_type = by_name(type_name)
            count = int(channel_text)
            rate = Fraction(rate_text)
            block = int(block_text)
        except (UnknownSignalType, ValueError, ZeroDivisionError) as error:
            raise ConfigError(f"{value!r}: {error}", key="--signal") from None
        if not 1 <= count <= 0xFFFF or rate <= 0 or not 1 <= block <= 0xFFFF:
            raise ConfigError(f"{value!r}: channels, rate and block size must be positive", key="--signal")
        channels = tuple(ChannelSpec(f"{signal_type.name}{n}", signal_type) for n in range(1, count + 1))
        specs.append(SourceSpec(f"signal{index}", wave, rate, block, channels))
    if specs and specs[0].aperiodic:
        raise ConfigError("the first --signal is the master and must be periodic", key="--signal")
    return tuple(_with_aperiodic_rates(specs))


# ---------------------------------------------------------------- [recording] and [lsl]: server-side sinks

RECORDING_FORMATS = ("bdf", "edf", "raw", "npz", "csv")
PATTERN_FIELDS = ("date", "time", "subject", "run")
_SWITCHES = {"on": True, "yes": True, "true": True, "1": True, "off": False, "no": False, "false": False, "0": False}


def _switch(section: _Section, key: str, default: bool) -> bool:
    text = (section.text(key) or "").lower()
    if not text:
        return default
    if text not in _SWITCHES:
        raise section.error(key, f"{text!r} is not on or off")
    return _SWITCHES[text]


def _with_sinks(config: ServerConfig, sections: Mapping[str, _Section], path: str | None) -> ServerConfig:
    """[recording] and [lsl] (tia.server.recorder, tia.lsl_bridge); both off by default."""
    recording = _parse_recording(sections.get("recording") or _Section(path, "recording", {}))
    lsl = _parse_lsl(sections.get("lsl") or _Section(path, "lsl", {}))
    return replace(config, recording=recording, lsl=lsl)


def _parse_recording(section: _Section) -> RecordingConfig:
    default = RecordingConfig()
    enabled = _switch(section, "enabled", default.enabled)
    directory = section.text("directory") or default.directory
    pattern = section.text("pattern") or default.pattern
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None}
    except ValueError as error:
        raise section.error("pattern", f"{pattern!r} is not a file name pattern: {error}") from None
    unknown = sorted(fields - set(PATTERN_FIELDS))
    if unknown:
        raise section.error("pattern", f"unknown field {{{unknown[0]}}}; known: {', '.join(PATTERN_FIELDS)}")
    if "run" not in fields:
        raise section.error("pattern", "needs {run} (e.g. run{run:02d}): the run number keeps every recording "
                                       "from overwriting another")
    try:
        sample = pattern.format(date="20240131", time="235959", subject="S01", run=1)
    except (ValueError, IndexError, KeyError) as error:
        raise section.error("pattern", f"{pattern!r} is not a file name pattern: {error}") from None
    if sample.startswith("/") or any(part in ("", ".", "..") for part in sample.split("/")):
        raise section.error("pattern", f"{pattern!r} must give a relative file name, without '..'")
    formats: list[str] = []
    for item in (section.text("formats") or ", ".join(default.formats)).split(","):
        name = item.strip().lower().lstrip(".")
        if name not in RECORDING_FORMATS:
            raise section.error("formats", f"{item.strip()!r} is not one of {', '.join(RECORDING_FORMATS)}")
        if name in formats:
            raise section.error("formats", f"{name} is listed twice")
        formats.append(name)
    if {"edf", "bdf"} & set(formats):
        try:
            import edfio  # noqa: F401
        except ImportError:
            raise section.error("formats", "EDF/BDF needs the edfio package: pip install 'txtia[record]'") from None
    result = RecordingConfig(
        enabled, directory, pattern, tuple(formats),
        section.positive("flush_interval", default.flush_interval),
        section.positive("queue_seconds", default.queue_seconds),
        _switch(section, "control", default.control),
    )
    section.check_all_used()
    return result


def _parse_lsl(section: _Section) -> LSLOutletConfig:
    default = LSLOutletConfig()
    outlets = _switch(section, "outlets", default.outlets)
    result = LSLOutletConfig(
        outlets,
        section.text("name") or default.name,
        section.text("source_id") or default.source_id,
        section.positive("queue_seconds", default.queue_seconds),
    )
    section.check_all_used()
    if outlets:
        from tia.sources.lsl import import_pylsl

        try:
            import_pylsl()
        except SourceError as error:
            raise section.error("outlets", str(error)) from None
    return result
