"""Server configuration: INI file -> validated, immutable objects.

Every problem is reported in one line with the file, section and key at fault
and what was expected, and the daemon refuses to start rather than guess:
unknown keys are errors too, because a typo that silently does nothing costs a
recording. An optional dependency is checked only when the configuration uses
the feature that needs it.

Modules: ``model`` (the frozen dataclasses), ``reader`` (``ConfigError`` and
the section reader), ``server`` ([server], [subject], [udp], ``--port``),
``sources`` ([source:NAME], ``--signal``), ``features`` ([recording], [lsl],
[web], [events]), ``tls`` (the PEM files, read only when TLS is on),
``extras`` (optional dependencies), ``loader`` (the file, cross-section rules).
Import from here: the names below are the stable ones.
"""

from tia.config.features import (
    EVENT_ENDPOINT_KINDS,
    PATTERN_FIELDS,
    RECORDING_FORMATS,
    WEB_ENDPOINT_KINDS,
    parse_web_endpoint,
)
from tia.config.loader import load_config, parse_config, validate
from tia.config.model import (
    DEFAULT_CONTROL,
    DEFAULT_PEER_TIMEOUT,
    LSLOutletConfig,
    Network,
    RecordingConfig,
    ServerConfig,
    TLSConfig,
    UDPConfig,
)
from tia.config.reader import ConfigError
from tia.config.server import STALL_POLICIES, UDP_MODES, endpoint_address, with_control_port
from tia.config.sources import GENERIC_SOURCE_KEYS, SIGNAL_FORMS, SOURCE_PREFIX, sources_from_signal_options

__all__ = [
    "DEFAULT_CONTROL",
    "DEFAULT_PEER_TIMEOUT",
    "EVENT_ENDPOINT_KINDS",
    "GENERIC_SOURCE_KEYS",
    "PATTERN_FIELDS",
    "RECORDING_FORMATS",
    "SIGNAL_FORMS",
    "SOURCE_PREFIX",
    "STALL_POLICIES",
    "UDP_MODES",
    "WEB_ENDPOINT_KINDS",
    "ConfigError",
    "LSLOutletConfig",
    "Network",
    "RecordingConfig",
    "ServerConfig",
    "TLSConfig",
    "UDPConfig",
    "endpoint_address",
    "load_config",
    "parse_config",
    "parse_web_endpoint",
    "sources_from_signal_options",
    "validate",
    "with_control_port",
]
