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
    # the seed's server API (pytia 0.1.0): tia/seed.py
    "TiAConnectionHandler": "tia.seed:TiAConnectionHandler",
    "TiAException": "tia.seed:TiAException",
    "TiAServer": "tia.seed:TiAServer",
    "TiASignalConfig": "tia.seed:TiASignalConfig",
    "TIA_SIG_BP": "tia.seed:TIA_SIG_BP",
    "TIA_SIG_BUTTON": "tia.seed:TIA_SIG_BUTTON",
    "TIA_SIG_ECG": "tia.seed:TIA_SIG_ECG",
    "TIA_SIG_EEG": "tia.seed:TIA_SIG_EEG",
    "TIA_SIG_EMG": "tia.seed:TIA_SIG_EMG",
    "TIA_SIG_EOG": "tia.seed:TIA_SIG_EOG",
    "TIA_SIG_EVENT": "tia.seed:TIA_SIG_EVENT",
    "TIA_SIG_FMRI": "tia.seed:TIA_SIG_FMRI",
    "TIA_SIG_HR": "tia.seed:TIA_SIG_HR",
    "TIA_SIG_JOYSTICK": "tia.seed:TIA_SIG_JOYSTICK",
    "TIA_SIG_MOUSE": "tia.seed:TIA_SIG_MOUSE",
    "TIA_SIG_MOUSE_BTN": "tia.seed:TIA_SIG_MOUSE_BTN",
    "TIA_SIG_NIRS": "tia.seed:TIA_SIG_NIRS",
    "TIA_SIG_SENSORS": "tia.seed:TIA_SIG_SENSORS",
    "TIA_SIG_UNDEFINED": "tia.seed:TIA_SIG_UNDEFINED",
    "TIA_SIG_USER_1": "tia.seed:TIA_SIG_USER_1",
    "TIA_SIG_USER_2": "tia.seed:TIA_SIG_USER_2",
    "TIA_SIG_USER_3": "tia.seed:TIA_SIG_USER_3",
    "TIA_SIG_USER_4": "tia.seed:TIA_SIG_USER_4",
}

__all__ = [
    "TIA_SIG_BP",
    "TIA_SIG_BUTTON",
    "TIA_SIG_ECG",
    "TIA_SIG_EEG",
    "TIA_SIG_EMG",
    "TIA_SIG_EOG",
    "TIA_SIG_EVENT",
    "TIA_SIG_FMRI",
    "TIA_SIG_HR",
    "TIA_SIG_JOYSTICK",
    "TIA_SIG_MOUSE",
    "TIA_SIG_MOUSE_BTN",
    "TIA_SIG_NIRS",
    "TIA_SIG_SENSORS",
    "TIA_SIG_UNDEFINED",
    "TIA_SIG_USER_1",
    "TIA_SIG_USER_2",
    "TIA_SIG_USER_3",
    "TIA_SIG_USER_4",
    "TiAClient",
    "TiAConnectionHandler",
    "TiAError",
    "TiAException",
    "TiAPacket",
    "TiAServer",
    "TiASignalConfig",
    "__version__",
]

if TYPE_CHECKING:
    from tia.client.blocking import TiAClient, TiAError, TiAPacket
    from tia.seed import (
        TIA_SIG_BP,
        TIA_SIG_BUTTON,
        TIA_SIG_ECG,
        TIA_SIG_EEG,
        TIA_SIG_EMG,
        TIA_SIG_EOG,
        TIA_SIG_EVENT,
        TIA_SIG_FMRI,
        TIA_SIG_HR,
        TIA_SIG_JOYSTICK,
        TIA_SIG_MOUSE,
        TIA_SIG_MOUSE_BTN,
        TIA_SIG_NIRS,
        TIA_SIG_SENSORS,
        TIA_SIG_UNDEFINED,
        TIA_SIG_USER_1,
        TIA_SIG_USER_2,
        TIA_SIG_USER_3,
        TIA_SIG_USER_4,
        TiAConnectionHandler,
        TiAException,
        TiAServer,
        TiASignalConfig,
    )


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
