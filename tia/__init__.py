"""txtia: a TOBI Interface A (TiA 1.0) server daemon and client library on Twisted."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public names resolved on first use, so that ``import tia`` stays cheap (no
# numpy, sockets or Twisted) for tools that only want the version. Add an
# entry here, in __all__ and in the TYPE_CHECKING block to export more.
_LAZY_EXPORTS: dict[str, str] = {
    "TiAClient": "tia.client.blocking:TiAClient",
    "TiAError": "tia.client.blocking:TiAError",
    "TiAPacket": "tia.client.blocking:TiAPacket",
}

__all__ = ["TiAClient", "TiAError", "TiAPacket", "__version__"]

if TYPE_CHECKING:
    from tia.client.blocking import TiAClient, TiAError, TiAPacket


def __getattr__(name: str) -> object:
    """Import a lazily exported name on first access and cache it in the module."""
    target = _LAZY_EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, _, attribute = target.partition(":")
    value = getattr(importlib.import_module(module_name), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_EXPORTS})
