"""``twistd tia``: command-line options and the service they describe. Wiring only."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from tia.config import (
    ConfigError,
    ServerConfig,
    load_config,
    parse_web_endpoint,
    sources_from_signal_options,
    validate,
    with_control_port,
)

DEFAULT_CONFIG = "etc/server.ini"
PACKAGED_CONFIG = Path(__file__).with_name("default-server.ini")


class Options(usage.Options):
    synopsis = "[--config PATH] [--port N] [--signal TYPE:CHANNELS:RATE:BLOCKSIZE[:WAVE] ...]"
    longdesc = (
        "Serve biosignals over TOBI Interface A (TiA 1.0). Sources, subject, endpoints and UDP "
        "mode come from an INI file (default etc/server.ini; without it, the packaged demo). "
        "--signal replaces the configured sources by synthetic ones, the first being the master: "
        "TYPE is a TiA signal type (eeg, emg, ...), WAVE one of sine (default), square, noise, ramp. "
        "Example: twistd -n tia --signal eeg:16:512:16 --signal bp:1:64:2:noise"
    )
    optParameters = [
        ["config", "c", None, f"server INI file [default: {DEFAULT_CONFIG}]"],
        ["port", "p", None, "control port, overriding the config's control endpoint", int],
        ["web", None, None, "live web monitor endpoint, e.g. tcp:8080 (loopback unless interface= is given) "
         "or off; overrides [web] endpoint"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["signal"] = []
        self.config: ServerConfig | None = None

    def opt_signal(self, value: str) -> None:
        """TYPE:CHANNELS:RATE:BLOCKSIZE[:WAVE], repeatable: synthetic sources replacing the config's."""
        self["signal"].append(value)

    opt_s = opt_signal

    def postOptions(self) -> None:
        path = self["config"]
        if path is None:
            path = DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else str(PACKAGED_CONFIG)
        try:
            config = load_config(path)
            if self["signal"]:
                config = replace(config, sources=sources_from_signal_options(self["signal"]))
                validate(config)
            if self["port"] is not None:
                if not 0 <= self["port"] <= 65535:
                    raise ConfigError(f"{self['port']} is not a TCP port", key="--port")
                config = with_control_port(config, self["port"])
            if self["web"] is not None:
                config = replace(config, web_endpoint=parse_web_endpoint(self["web"]))
        except ConfigError as error:
            raise usage.UsageError(str(error)) from None
        self.config = config


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from tia.daemon import build_service

    assert options.config is not None
    core: Any = reactor
    # A source that asks for the server to stop (on_error / on_end = stop-server) ends the process:
    # twistd stops its services, gracefully, when the reactor stops.
    return build_service(options.config, on_fatal=lambda reason: core.callWhenRunning(core.stop))
