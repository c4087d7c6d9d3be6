"""Loading a server INI file: its sections read in turn, then the rules that span sections."""

from __future__ import annotations

import configparser
from pathlib import Path

from tia.config.features import check_injected, parse_events, parse_lsl, parse_recording, parse_web
from tia.config.model import ServerConfig
from tia.config.reader import ConfigError, Section, format_rate
from tia.config.server import parse_server, parse_subject, parse_udp
from tia.config.sources import SOURCE_PREFIX, parse_source, with_aperiodic_rates
from tia.protocol.packet import MAX_UDP_PAYLOAD, packet_size
from tia.sources.base import SourceSpec

SECTIONS = ("server", "subject", "udp", "events", "web", "recording", "lsl")


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
    """The validated configuration of a parsed INI file (``path`` names it in errors)."""
    sections = {name: Section(path, name, parser[name]) for name in parser.sections()}
    for name in sections:
        if name not in SECTIONS and not name.startswith(SOURCE_PREFIX):
            raise ConfigError(
                "unknown section (expected [server], [subject], [udp], [events], [web], [recording], [lsl] "
                "or [source:NAME])", path, name
            )

    def section(name: str) -> Section:
        return sections.get(name) or Section(path, name)

    server = parse_server(section("server"))
    subject = parse_subject(section("subject"))
    udp = parse_udp(section("udp"))
    events_endpoint = parse_events(section("events"))
    source_sections = [s for name, s in sections.items() if name.startswith(SOURCE_PREFIX)]
    if not source_sections:
        raise ConfigError("no [source:NAME] section: the server would have nothing to send", path)
    specs = with_aperiodic_rates([parse_source(s) for s in source_sections])
    for source_section in source_sections:
        source_section.check_all_used()
    check_injected(specs, events_endpoint, path)
    config = ServerConfig(
        tuple(specs), subject, udp=udp, path=path, events_endpoint=events_endpoint,
        web_endpoint=parse_web(section("web")),
        recording=parse_recording(section("recording"), subject.id),
        lsl=parse_lsl(section("lsl")),
        **server._asdict(),
    )
    validate(config)
    return config


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
                f"rate / blocksize = {format_rate(spec.packet_rate)} packets/s, but the master source "
                f"[{SOURCE_PREFIX}{master.name}] sends {format_rate(master.packet_rate)} packets/s "
                f"({format_rate(master.sampling_rate)} Hz / {master.block_size}); every periodic signal "
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
