"""Clients of a TiA 1.0 server: a blocking one on plain sockets, a Twisted one for applications.

The blocking client lives in :mod:`tia.client.blocking`, the Twisted client (Deferred API) in
:mod:`tia.client.app`. Their ``__all__`` names are re-exported here lazily (see tia/__init__.py),
so that importing the blocking client does not import Twisted. To export another module's
names, add it to ``_EXPORTS`` and to the TYPE_CHECKING imports, one line each.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from tia import _LazyExports

_EXPORTS = _LazyExports(__name__, globals(), ("tia.client.blocking", "tia.client.app"))

if _TYPE_CHECKING:
    from tia.client.app import *  # noqa: F403
    from tia.client.blocking import *  # noqa: F403


def __getattr__(name: str) -> object:
    return _EXPORTS.resolve(name)


def __dir__() -> list[str]:
    return _EXPORTS.dir()
