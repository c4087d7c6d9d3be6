"""A server's recording: runs started by ``[recording] enabled`` or by control clients, one at a time.

:class:`RecordingService` is a child service of ``TiAService`` (started
before the first tick, stopped after the last, so a run started with the
server holds every packet) and the control extension answering
``StartRecording``, ``StopRecording`` and ``GetRecordingState`` (``tia
recording start|stop|status``). :class:`RecordingManager` starts and stops
the runs, each a :class:`~tia.recording.sink.RecordingSink` subscribed to the
hub. ``tia.daemon.build_service`` attaches it (:func:`attach_recording`).

A run whose formats need an optional package that is missing (EDF/BDF
without edfio, BIDS without mne-bids) is refused with one line naming the
extra to install; the server streams on.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from tia.config import RecordingConfig
from tia.config.extras import missing_extra
from tia.protocol.control import (
    GET_RECORDING_STATE,
    OK_REPLY,
    RECORDING_STATE,
    START_RECORDING,
    STOP_RECORDING,
    ControlMessage,
    build_error,
    build_message,
)
from tia.recording.sink import Opener, RecordingSink

if TYPE_CHECKING:
    from tia.server.control import ControlCommands, ServerControlProtocol
    from tia.server.hub import StreamHub
    from tia.server.service import TiAService

__all__ = [
    "RecordingManager",
    "RecordingService",
    "RecordingStateError",
    "RecordingUnavailable",
    "attach_recording",
    "missing_writer",
]

log = Logger()

EDFIO_FORMATS = ("edf", "bdf")  # written with edfio, the [record] extra
CONTROL_OFF = build_error("recording control is switched off on this server ([recording] control = off)")


def missing_writer(formats: Sequence[str]) -> str | None:
    """None if every format can be written here; else one line naming the extra to install.

    Asked at each start, so the answer is the installation's as it is now; the
    first time it imports edfio (some 15 ms, caught up by the clock) and, for
    BIDS, mne-bids (more: a start that needs it is rare).
    """
    needing = [fmt.upper() for fmt in formats if fmt in EDFIO_FORMATS]
    if needing:
        missing = missing_extra("edfio", f"recording {'/'.join(needing)}", "record")
        if missing is not None:
            return missing
    if "bids" in formats:
        return missing_extra("mne_bids", "recording BIDS", "bids", "mne-bids") or missing_extra(
            "edfio", "recording BIDS", "bids")
    return None


class RecordingStateError(Exception):
    """A request that does not fit the current state (start while recording, ...)."""


class RecordingUnavailable(RecordingStateError):
    """A run this installation cannot write (an optional package missing); the message is one line."""


class RecordingManager:
    """Starts and stops recording runs of one server; at most one runs at a time."""

    def __init__(self, config: RecordingConfig, hub: StreamHub, reactor: Any,
                 server: dict[str, Any] | None = None, opener: Opener | None = None) -> None:
        self.config = config
        self.hub = hub
        self.reactor = reactor
        self.server = dict(server or {})
        self.opener = opener
        self.current: RecordingSink | None = None
        self.last: RecordingSink | None = None
        self.refused: str | None = None  # why the last start could not be, when this installation cannot
        self._finishing: set[RecordingSink] = set()

    def start(self) -> RecordingSink:
        """Start a run; :class:`RecordingStateError` (one line) when one is on or cannot be written."""
        current = self.current
        if current is not None and current.state in ("starting", "on"):
            raise RecordingStateError(f"already recording to {current.raw_path or self.config.directory}")
        missing = missing_writer(self.config.formats)
        if missing is not None:
            self.refused = missing
            raise RecordingUnavailable(missing)
        self.refused = None
        if current is not None:
            self._finish(current)  # a run that failed: close it, start afresh
        sink = RecordingSink(self.config, self.hub.metainfo, self.reactor, self.opener, self.server, self.hub)
        sink.start()
        self.hub.subscribe(sink)
        self.current = sink
        return sink

    def stop(self) -> Deferred[None]:
        """Stop the current run; fires once its files are complete."""
        sink = self.current
        if sink is None:
            raise RecordingStateError("not recording")
        self.current = None
        return self._finish(sink)

    def stop_all(self) -> Deferred[None]:
        """The server stops: finish the current run and any still finishing."""
        if self.current is not None:
            self.stop()
        waiting = [sink.stop() for sink in tuple(self._finishing)]
        return defer.DeferredList(waiting, consumeErrors=True).addCallback(lambda _: None)

    def _finish(self, sink: RecordingSink) -> Deferred[None]:
        self.hub.unsubscribe(sink)
        self.last = sink
        self._finishing.add(sink)
        if sink.state != "error":
            sink.state = "stopping"

        def finished(result: object) -> object:
            self._finishing.discard(sink)
            return result

        return sink.stop().addBoth(finished)

    def state(self) -> dict[str, Any]:
        """The ``GetRecordingState`` report: the current run, else the last one, else ``off``."""
        report: dict[str, Any] = {"state": "off", "directory": str(self.config.directory),
                                  "formats": list(self.config.formats)}
        sink = self.current or self.last
        if self.current is None and self.refused is not None:
            report.update(state="error", error=self.refused)
        elif sink is not None:
            report.update(
                state=sink.state,
                path=str(sink.raw_path) if sink.raw_path else None,
                packets=sink.written,
                seconds=round(sink.seconds, 3),
                dropped=sink.dropped,
                error=sink.error,
                files=[str(p) for p in sink.files],
            )
        return report


class RecordingService(Service):
    """[recording] of a running server: a child service of ``TiAService`` (started before the
    first tick, stopped after the last) and the control extension that starts and stops runs."""

    name = "recording"

    def __init__(self, config: RecordingConfig, hub: StreamHub, reactor: Any, server: dict[str, Any]) -> None:
        self.config = config
        self.manager = RecordingManager(config, hub, reactor, server)

    def startService(self) -> None:
        """``[recording] enabled``: the first run starts with the server, before the first tick."""
        super().startService()
        if self.config.enabled and self.manager.current is None:
            try:
                self.manager.start()
            except RecordingStateError as error:
                log.error("[recording] enabled: {error}; the server streams without recording", error=error)

    def stopService(self) -> Deferred[None]:
        """After the clock stopped: buffered ticks are written and the files completed."""
        super().stopService()
        return self.manager.stop_all()

    def register_commands(self, commands: ControlCommands) -> None:
        """``StartRecording``, ``StopRecording``, ``GetRecordingState`` on the control channel."""
        commands.register(START_RECORDING, self._start)
        commands.register(STOP_RECORDING, self._stop)
        commands.register(GET_RECORDING_STATE, self._state)

    def _start(self, session: ServerControlProtocol, message: ControlMessage) -> bytes:
        return self._change(session, "started", self.manager.start)

    def _stop(self, session: ServerControlProtocol, message: ControlMessage) -> bytes:
        return self._change(session, "stopped", self.manager.stop)

    def _change(self, session: ServerControlProtocol, done: str, action: Callable[[], object]) -> bytes:
        if not self.config.control:
            return CONTROL_OFF
        try:
            action()
        except RecordingStateError as error:
            return build_error(str(error))
        log.info("recording {done} by {peer}", done=done, peer=session.peer_host)
        return OK_REPLY

    def _state(self, session: ServerControlProtocol, message: ControlMessage) -> bytes:
        if not self.config.control:
            return CONTROL_OFF
        report = self.manager.state()
        return build_message(RECORDING_STATE, report["state"], json.dumps(report).encode("utf-8"))


def attach_recording(service: TiAService) -> RecordingService:
    """Give ``service`` its [recording]: the child service and its control commands."""
    config = service.config
    server = {"control": config.control, "host": socket.gethostname(), "config": config.path}
    recording = RecordingService(config.recording, service.hub, service.reactor, server)
    recording.setServiceParent(service)
    recording.register_commands(service.commands)
    return recording
