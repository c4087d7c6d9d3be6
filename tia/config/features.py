"""The optional features, each off by default: [recording], [lsl] outlets, [web] monitor, [events] endpoint.

A feature that needs an extra package is checked for it only when it is
switched on (``tia.config.extras``): a base install runs everything else.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Sequence

from tia.config.extras import missing_extra
from tia.config.model import LSLOutletConfig, RecordingConfig
from tia.config.reader import ConfigError, Section
from tia.config.server import endpoint_address
from tia.config.sources import SOURCE_PREFIX
from tia.sources.base import SourceSpec

EVENT_ENDPOINT_KINDS = ("tcp", "tcp6", "unix")
WEB_ENDPOINT_KINDS = ("tcp", "tcp6", "unix")
RECORDING_FORMATS = ("bdf", "edf", "raw", "npz", "csv", "bids")
PATTERN_FIELDS = ("date", "time", "subject", "run")
BIDS_KEYS = ("bids_root", "task", "session", "bids_format", "line_freq")
BIDS_DATA_FORMATS = ("bdf", "edf")
BIDS_LABEL = re.compile(r"[A-Za-z0-9]+")  # a BIDS label, as tia.recording.bids.bids_label checks it


def parse_recording(section: Section, subject_id: str = "") -> RecordingConfig:
    """``[recording]``; with ``enabled = on`` and EDF or BDF among the formats, edfio must be there (and
    with ``bids``, mne-bids). ``subject_id`` (``[subject] id``) is the BIDS subject of ``formats = bids``.

    Off, nothing is checked: a recording started at run time reports a missing
    extra itself, and the server streams either way.
    """
    default = RecordingConfig()
    enabled = section.switch("enabled", default.enabled)
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
    written = section.has("formats")
    if enabled and {"edf", "bdf"} & set(formats):
        feature = "recording EDF/BDF" if written else "recording BDF (the default formats = bdf, raw)"
        missing = missing_extra("edfio", feature, "record")
        if missing is not None:
            raise section.error("formats" if written else "enabled", missing)
    if enabled and "bids" in formats:
        missing = missing_extra("mne_bids", "recording BIDS", "bids", "mne-bids") or missing_extra(
            "edfio", "recording BIDS", "bids")
        if missing is not None:
            raise section.error("formats", missing)
    result = RecordingConfig(
        enabled, directory, pattern, tuple(formats),
        section.positive("flush_interval", default.flush_interval),
        section.positive("queue_seconds", default.queue_seconds),
        section.switch("control", default.control),
    )
    result = _with_bids(section, result, subject_id)
    section.check_all_used()
    return result


def _with_bids(section: Section, recording: RecordingConfig, subject_id: str) -> RecordingConfig:
    """The BIDS keys of ``[recording]``: needed with ``formats = bids``, refused without."""
    if "bids" not in recording.formats:
        for key in BIDS_KEYS:
            if section.has(key):
                raise section.error(key, "set, but formats does not list bids (e.g. formats = bids, raw)")
        return recording
    root = section.text("bids_root")
    if not root:
        raise section.error("bids_root", "missing; formats lists bids: set the BIDS dataset's directory "
                                         "(e.g. bids_root = /data/mystudy)")
    task = section.text("task") or ""
    if not task:
        raise section.error("task", "missing; formats lists bids: set the BIDS task label (e.g. task = rest)")
    session = section.text("session") or ""
    for key, value in (("task", task), ("session", session)):
        if value and not BIDS_LABEL.fullmatch(value):
            raise section.error(key, f"{value!r} is not a BIDS label: letters and digits only")
    if not BIDS_LABEL.fullmatch(subject_id):
        shown = f"{subject_id!r} is not" if subject_id else "missing: an empty id is not"
        raise ConfigError(f"{shown} a BIDS subject label ([recording] formats lists bids): letters and digits "
                          "only (e.g. id = S01)", section.path, "subject", "id")
    return dataclasses.replace(
        recording, bids_root=root, task=task, session=session,
        bids_format=section.choice("bids_format", recording.bids_format, BIDS_DATA_FORMATS),
        line_freq=section.positive("line_freq", 0.0) or None,
    )


def parse_lsl(section: Section) -> LSLOutletConfig:
    default = LSLOutletConfig()
    outlets = section.switch("outlets", default.outlets)
    result = LSLOutletConfig(
        outlets,
        section.text("name") or default.name,
        section.text("source_id") or default.source_id,
        section.positive("queue_seconds", default.queue_seconds),
    )
    section.check_all_used()
    if outlets:
        missing = missing_extra("pylsl", "publishing LSL outlets", "sources")
        if missing is not None:
            raise section.error("outlets", missing)
    return result


def parse_events(section: Section) -> str | None:
    """``[events] endpoint``: off by default; a Twisted server endpoint string."""
    endpoint = section.text("endpoint") or "off"
    section.check_all_used()
    if endpoint.lower() in ("off", "none", "no"):
        return None
    if endpoint.split(":", 1)[0] not in EVENT_ENDPOINT_KINDS:
        raise section.error(
            "endpoint", f"{endpoint!r} is not a server endpoint such as tcp:9100:interface=127.0.0.1 (or off)"
        )
    return endpoint


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
    port_text = endpoint_address(endpoint)
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"{text!r}: {port_text!r} is not a TCP port", path, section, key)
    if not any(p.startswith("interface=") for p in rest.split(":")):
        endpoint += ":interface=127.0.0.1" if kind == "tcp" else ":interface=\\:\\:1"
    return endpoint


def parse_web(section: Section) -> str | None:
    """``[web] endpoint``: off by default."""
    endpoint = parse_web_endpoint(section.text("endpoint") or "off", section.path, section.name, "endpoint")
    section.check_all_used()
    return endpoint


def check_injected(specs: Sequence[SourceSpec], endpoint: str | None, path: str | None) -> None:
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
