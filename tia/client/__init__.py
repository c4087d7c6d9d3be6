"""Clients of a TiA 1.0 server: a blocking one on plain sockets, a Twisted one for applications.

Blocking, no Twisted import (the seed's API and txtia's extensions):

- :mod:`tia.client.blocking`: ``TiAClient``
- :mod:`tia.client.packet`: ``TiAPacket``
- :mod:`tia.client.events`: ``post_event`` for a server's ``[events]`` endpoint
- :mod:`tia.client.recording_control`: ``recording_request``, ``format_state``
- :mod:`tia.client.sequence`: ``PacketSequence`` (gaps, late and repeated packets), ``Arrival``

Twisted (Deferred API):

- :mod:`tia.client.control`: ``TiAControlProtocol``, ``connectTiA``
- :mod:`tia.client.data`: the TCP/UDP data and server-state protocols, ``GapDetector``
- :mod:`tia.client.stream`: ``TiAStream``, the whole session, optionally reconnecting

Shared: :mod:`tia.client.errors` (the exceptions of both), :mod:`tia.client.tls`
(``TLSSettings``). The modules' ``__all__`` names are re-exported here lazily
(see tia/__init__.py), blocking modules first, so that importing the blocking
client does not import Twisted. To export another module's names, add it to
``_EXPORTS`` and to the TYPE_CHECKING imports, one line each.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from tia import _LazyExports

_EXPORTS = _LazyExports(
    __name__,
    globals(),
    (
        "tia.client.errors",
        "tia.client.blocking",
        "tia.client.packet",
        "tia.client.events",
        "tia.client.recording_control",
        "tia.client.sequence",
        "tia.client.control",
        "tia.client.data",
        "tia.client.stream",
    ),
)

if _TYPE_CHECKING:
    from tia.client.blocking import *  # noqa: F403
    from tia.client.control import *  # noqa: F403
    from tia.client.data import *  # noqa: F403
    from tia.client.errors import *  # noqa: F403
    from tia.client.events import *  # noqa: F403
    from tia.client.packet import *  # noqa: F403
    from tia.client.recording_control import *  # noqa: F403
    from tia.client.sequence import *  # noqa: F403
    from tia.client.stream import *  # noqa: F403


def __getattr__(name: str) -> object:
    return _EXPORTS.resolve(name)


def __dir__() -> list[str]:
    return _EXPORTS.dir()
