"""Shared helpers of the test suite: configs from text, in-memory servers."""

from __future__ import annotations

import configparser
import textwrap

from tia.config import ServerConfig, parse_config

RAMP_INI = """
[server]
control = tcp:0:interface=127.0.0.1
{server_extra}

[subject]
id = T01

[udp]
mode = {udp_mode}

[source:eeg]
driver = ramp
rate = {rate}
blocksize = {blocksize}
channels = {channels}
type = eeg
"""


def config_from_text(text: str, path: str = "test.ini") -> ServerConfig:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    parser.read_string(textwrap.dedent(text))
    return parse_config(parser, path)


def ramp_config(
    rate: int = 1000,
    blocksize: int = 10,
    channels: int = 4,
    udp_mode: str = "unicast",
    extra: str = "",
    server_extra: str = "",
) -> ServerConfig:
    """A ramp server config; ``server_extra`` lines go into [server], ``extra`` sections at the end."""
    text = RAMP_INI.format(
        rate=rate, blocksize=blocksize, channels=channels, udp_mode=udp_mode, server_extra=server_extra
    )
    return config_from_text(text + textwrap.dedent(extra))


def ramp_values(channels: int, first_sample: int, count: int) -> list[list[float]]:
    """What the ramp driver sends: channel c (1-based), sample k -> c * 1000 + k % 1000."""
    return [
        [float(c * 1000 + (k % 1000)) for k in range(first_sample, first_sample + count)]
        for c in range(1, channels + 1)
    ]
