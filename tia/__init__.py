"""txtia: a TOBI Interface A (TiA 1.0) server daemon and client library on Twisted."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING

__version__ = "0.1.0"


class _LazyExports:
    """A package's public names, imported on first use from the modules that define them.

    The names are everything in the ``__all__`` of ``modules`` (the first module that
    lists a name provides it) plus ``own``, what the package defines itself. Nothing is
    imported until such a name is asked for, so importing the package stays cheap (no
    numpy, sockets or Twisted). Used by this package and by :mod:`tia.client`.
    """

    def __init__(
        self, package: str, namespace: dict[str, object], modules: tuple[str, ...], own: tuple[str, ...] = ()
    ) -> None:
        self.package, self.namespace, self.modules, self.own = package, namespace, modules, own

    def _imported(self) -> Iterator[ModuleType]:
        """The modules, each imported only when the one before did not have what was asked."""
        return (importlib.import_module(module) for module in self.modules)

    def names(self) -> list[str]:
        """The package's ``__all__``: imports every module it exports from."""
        return sorted({*self.own, *(name for module in self._imported() for name in module.__all__)})

    def resolve(self, name: str) -> object:
        """The module ``__getattr__``: import the module that exports ``name`` and cache the value."""
        value: object
        if name == "__all__":
            value = self.names()
        elif name.startswith("_"):  # dunder probes (__path__, __wrapped__, ...): never an export
            raise AttributeError(f"module {self.package!r} has no attribute {name!r}")
        else:
            module = next((m for m in self._imported() if name in m.__all__), None)
            if module is None:
                if name in self.namespace:  # a submodule the imports above have just loaded
                    return self.namespace[name]
                raise AttributeError(f"module {self.package!r} has no attribute {name!r}")
            value = getattr(module, name)
        self.namespace[name] = value
        return value

    def dir(self) -> list[str]:
        """The module ``__dir__``: what is loaded plus every export (imports the modules)."""
        return sorted({*self.namespace, *self.names()})


# Exported: all of tia.client.blocking's __all__ (the seed's client) and tia.seed's (its
# server API and TIA_SIG_* constants). To export another module's names, add it here
# and to the TYPE_CHECKING imports below.
_EXPORTS = _LazyExports(__name__, globals(), ("tia.client.blocking", "tia.seed"), own=("__version__",))

if TYPE_CHECKING:
    from tia.client.blocking import *  # noqa: F403
    from tia.seed import *  # noqa: F403


def __getattr__(name: str) -> object:
    return _EXPORTS.resolve(name)


def __dir__() -> list[str]:
    return _EXPORTS.dir()
