"""``twistd tia``: command-line options and the service they describe. Wiring only.

Every start-up failure the user can fix (a config error, a bad option, a
missing extra, a taken port) is one line on stderr and exit status 1: a
``StartupError`` from ``postOptions`` or ``makeService``, both of which twistd
runs before it writes its pid file and daemonizes. (For a ``UsageError`` twistd
prints its whole usage first: that is left to unknown options and ``--help``.)
"""

from __future__ import annotations

import errno
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from tia.server.listener import ListenError

DEFAULT_CONFIG = "etc/server.ini"
PACKAGED_CONFIG = Path(__file__).with_name("default-server.ini")


class StartupError(SystemExit):
    """A start-up failure: Python prints its one line on stderr and exits with status 1.

    twistd lets ``SystemExit`` through untouched, without its usage text or a traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class Options(usage.Options):
    synopsis = "[--config PATH] [--port N] [--signal TYPE:CHANNELS:RATE:BLOCKSIZE[:WAVE] ...]"
    longdesc = (
        "Serve biosignals over TOBI Interface A (TiA 1.0). Sources, subject, endpoints and UDP "
        "mode come from an INI file (default etc/server.ini; without it, the packaged demo). "
        "--signal replaces the configured sources by synthetic ones, the first being the master: "
        "TYPE is a TiA signal type (eeg, emg, ...), WAVE one of sine (default), square, noise, ramp; "
        "an aperiodic TYPE (button, axis, keycode, mouse-button, event) takes the packet grid: "
        "TYPE:CHANNELS or TYPE:CHANNELS:0:0[:WAVE]. "
        "Example: twistd -n --pidfile= tia --signal eeg:16:512:16 --signal bp:1:64:2:noise --signal event:1"
    )
    optParameters = [
        ["config", "c", None, f"server INI file [default: {DEFAULT_CONFIG}]"],
        ["port", "p", None, "control port, overriding the config's control endpoint"],
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
        try:
            self.config = self._configured()
        except ConfigError as error:
            raise StartupError(str(error)) from None

    def _configured(self) -> ServerConfig:
        path = self["config"]
        if path is None:
            path = DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else str(PACKAGED_CONFIG)
        config = load_config(path)
        if self["signal"]:
            config = replace(config, sources=sources_from_signal_options(self["signal"]))
            validate(config)  # what is left to fail: the file's [udp] datagram size
        if self["port"] is not None:
            config = with_control_port(config, _tcp_port(self["port"]))
        if self["web"] is not None:
            config = replace(config, web_endpoint=parse_web_endpoint(self["web"]))
        return config

    def listening_error(self, error: ListenError) -> str:
        """The one line for a port that cannot be bound: the endpoint and where the user set it."""
        config = self.config
        assert config is not None
        where = error.what
        if error.description == config.control and self["port"] is not None:
            where = f"--port {self['port']}"
        elif error.description == config.web_endpoint and self["web"] is not None:
            where = f"--web {self['web']}"
        reason = error.reason
        if reason == os.strerror(errno.EADDRINUSE):
            reason += " (another program, or a second daemon, has it)"
        return f"{where}: cannot listen on {error.description}: {reason}"


def _tcp_port(text: str) -> int:
    if not text.strip().isdigit() or int(text) > 65535:
        raise ConfigError("not a TCP port (0..65535)", key=f"--port {text!r}")
    return int(text)


def makeService(options: Options) -> IService:
    """The daemon, its listening ports bound: a taken port fails here, before twistd writes its pid file."""
    from twisted.internet import reactor

    from tia.daemon import build_service
    from tia.server.listener import ListenError

    assert options.config is not None
    core: Any = reactor
    try:
        # A source that asks for the server to stop (on_error / on_end = stop-server) ends the
        # process: twistd stops its services, gracefully, when the reactor stops.
        service = build_service(options.config, on_fatal=lambda reason: core.callWhenRunning(core.stop))
        service.bind()
    except ConfigError as error:
        raise StartupError(str(error)) from None
    except ListenError as error:
        raise StartupError(options.listening_error(error)) from None
    return service
