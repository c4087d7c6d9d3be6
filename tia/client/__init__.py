"""Clients of a TiA 1.0 server: a blocking one on plain sockets."""

# The Twisted client for applications (Deferred API) lives in tia.client.app. Its
# names are re-exported lazily, as in tia/__init__.py, so that the blocking client
# (tia.client.blocking) does not import Twisted.
import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING

_APP_EXPORTS = (
    "GapDetector",
    "TiAClientError",
    "TiAConnectionLost",
    "TiAControlProtocol",
    "TiAProtocolError",
    "TiAServerError",
    "TiAServerStateProtocol",
    "TiAStream",
    "TiATCPDataProtocol",
    "TiAUDPDataProtocol",
    "connectTiA",
)

if _TYPE_CHECKING:
    from tia.client.app import GapDetector as GapDetector
    from tia.client.app import TiAClientError as TiAClientError
    from tia.client.app import TiAConnectionLost as TiAConnectionLost
    from tia.client.app import TiAControlProtocol as TiAControlProtocol
    from tia.client.app import TiAProtocolError as TiAProtocolError
    from tia.client.app import TiAServerError as TiAServerError
    from tia.client.app import TiAServerStateProtocol as TiAServerStateProtocol
    from tia.client.app import TiAStream as TiAStream
    from tia.client.app import TiATCPDataProtocol as TiATCPDataProtocol
    from tia.client.app import TiAUDPDataProtocol as TiAUDPDataProtocol
    from tia.client.app import connectTiA as connectTiA


def __getattr__(name: str) -> object:
    """Import a Twisted-client name from tia.client.app on first access."""
    if name not in _APP_EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module("tia.client.app"), name)
    globals()[name] = value
    return value
