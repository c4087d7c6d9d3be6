"""The validated configuration: frozen dataclasses the server is built from.

Nothing here reads a file; ``tia.config.loader`` fills these from an INI file
and ``tia.tap`` adjusts them from the command line (``dataclasses.replace``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from fractions import Fraction

from tia.protocol.metainfo import Subject
from tia.sources.base import SourceSpec

DEFAULT_CONTROL = "tcp:9000:interface=127.0.0.1"
DEFAULT_PEER_TIMEOUT = 20  # seconds; [server] peer_timeout

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
    """[recording]: the server records what it sends (tia.recording); off by default."""

    enabled: bool = False  # record from start-up; StartRecording / 'tia recording start' at run time
    directory: str = "recordings"  # relative to the daemon's working directory
    pattern: str = "{date}_{subject}_run{run:02d}"
    formats: tuple[str, ...] = ("bdf", "raw")
    flush_interval: float = 1.0  # seconds: what a crash can lose at most
    queue_seconds: float = 10.0  # how far the writer may fall behind before packets are dropped
    control: bool = True  # control clients may start and stop recordings
    # formats = bids: each run joins a BIDS-EEG dataset (tia.recording.bids); the subject is [subject] id
    bids_root: str | None = None  # the dataset's directory (relative to the daemon's working directory)
    task: str = ""  # the BIDS task label
    session: str = ""  # the BIDS session label; empty: none
    bids_format: str = "bdf"  # the data file: bdf or edf
    line_freq: float | None = None  # PowerLineFrequency in Hz; None: n/a


@dataclass(frozen=True)
class LSLOutletConfig:
    """[lsl]: every signal also published as a Lab Streaming Layer outlet (tia.lsl.outlets)."""

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
    peer_timeout: int = DEFAULT_PEER_TIMEOUT  # seconds a peer that stopped answering keeps its connections
    max_connections: int = 64  # control connections at once (and server-state connections)
    max_connections_per_host: int = 0  # the same, from one peer address
    allow: tuple[Network, ...] = ()  # client networks allowed to connect; empty: everyone
    request_rate: int = 200  # control requests per second per connection (bursts of as many)
    stall_policy: str = "catch-up"  # after a stalled reactor: send every missed tick, or skip them
    sample_order: str = "channel-major"  # samples inside a signal's block on the wire (eegdev reads sample-major)
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
