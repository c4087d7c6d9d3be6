"""The daemon assembled: ``TiAService`` and the optional parts its configuration asks for.

The server layer knows nothing of the web monitor, recording or LSL outlets;
each attaches itself to a ``TiAService`` (a child service, control commands).
This is the one place that puts them together, for ``twistd tia``, the
seed-compatible ``TiAServer`` and the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.interfaces import IReactorTime

from tia.config import ServerConfig
from tia.server.service import TiAService
from tia.sources.base import ISource

__all__ = ["build_service"]


def build_service(
    config: ServerConfig,
    reactor: Any = None,
    sources: Sequence[ISource] | None = None,
    clock: IReactorTime | None = None,
    *,
    warn_exposure: bool = True,
    on_fatal: Callable[[str], object] | None = None,
) -> TiAService:
    """The whole daemon for ``config`` (arguments as ``TiAService``'s), not yet started."""
    service = TiAService(
        config, reactor, sources, clock, warn_exposure=warn_exposure, on_fatal=on_fatal
    )
    if config.web_endpoint is not None:
        from tia.web import attach_web

        attach_web(service, config.web_endpoint)
    from tia.recording.service import attach_recording

    attach_recording(service)  # its control commands exist even while recording is off
    if config.lsl.outlets:
        from tia.lsl.outlets import attach_lsl

        attach_lsl(service)
    return service
