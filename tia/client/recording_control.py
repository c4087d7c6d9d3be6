"""Starting, stopping and watching a txtia server's own recording, blocking (behind ``tia recording``).

The requests are :class:`~tia.client.blocking.TiAClient`'s
(``start_recording``, ``stop_recording``, ``recording_state``); this module
adds what a person wants from them: wait until the files are open (start)
or complete (stop), and the state as text.
"""

from __future__ import annotations

import time
from typing import Any

from tia.client.blocking import TiAClient
from tia.client.errors import TiAError
from tia.client.tls import TLSSettings
from tia.protocol.control import GET_RECORDING_STATE, START_RECORDING, STOP_RECORDING

__all__ = ["format_state", "recording_request"]

ACTIONS = ("start", "stop", "status")
POLL_INTERVAL = 0.1  # seconds between two GetRecordingState while the files open or complete


def recording_request(
    host: str, port: int, action: str, timeout: float, wait: float = 60.0, *, tls: TLSSettings | None = None
) -> str:
    """``tia recording start|stop|status``: the request, then the state once it settled, as text.

    ``start`` waits (at most ``wait`` seconds) until the files are open,
    ``stop`` until they are complete. Raises :class:`TiAError` when the
    server cannot be reached, refuses (already recording, not recording,
    control off, not a txtia server) or the recording failed to start.
    ``tls``: for a server with TLS on, the control connection is TLS with these settings.
    """
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    with TiAClient(host, port, timeout=timeout, tls=tls) as client:
        if action == "start" and not client.start_recording():
            raise TiAError(f"the server refused {START_RECORDING}: {client.last_error}")
        if action == "stop" and not client.stop_recording():
            raise TiAError(f"the server refused {STOP_RECORDING}: {client.last_error}")
        deadline = time.monotonic() + wait
        while True:
            report = client.recording_state()
            if report is None:
                raise TiAError(f"the server refused {GET_RECORDING_STATE}: {client.last_error}")
            settling = action != "status" and report["state"] in ("starting", "stopping")
            if not settling or time.monotonic() >= deadline:
                if action == "start" and report["state"] == "error":
                    raise TiAError("the recording failed to start:\n" + format_state(report).rstrip())
                return format_state(report)
            time.sleep(POLL_INTERVAL)


def format_state(report: dict[str, Any]) -> str:
    """A ``GetRecordingState`` report (:meth:`TiAClient.recording_state`) as lines a person reads."""
    lines = [f"recording: {report.get('state', '?')}"]
    if report.get("path") and (report.get("state") != "off" or report["path"] in report.get("files", [])):
        lines.append(f"raw file:  {report['path']}")
    if "packets" in report:
        lines.append(f"recorded:  {report['packets']} packets ({report.get('seconds', 0):g} s), "
                     f"{report.get('dropped', 0)} dropped")
    if report.get("error"):
        lines.append(f"error:     {report['error']}")
    if report.get("files"):
        lines.append("files:     " + ", ".join(report["files"]))
    if report.get("state") == "off" and "path" not in report:
        lines.append(f"directory: {report.get('directory')} (formats {', '.join(report.get('formats', []))})")
    return "\n".join(lines) + "\n"
