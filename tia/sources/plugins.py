"""Third-party source drivers, found through the ``tia.sources`` entry point group.

A distribution declares, e.g. in its pyproject.toml::

    [project.entry-points."tia.sources"]
    counter = "tia_counter:DRIVER"

and config names it like a built-in: ``driver = counter``. The entry point
loads a ``tia.sources.Driver`` (or a callable returning one); its name in
config is the entry point's name. Plugins are loaded lazily, one at a time,
when config asks for a driver no built-in has, so a broken plugin only
affects the sections that use it, and the error names its entry point.
"""

from __future__ import annotations

from dataclasses import replace
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tia.sources import Driver

GROUP = "tia.sources"


class PluginError(Exception):
    """A ``tia.sources`` entry point that cannot give a driver; the message names it."""


def _describe(entry: EntryPoint) -> str:
    dist = getattr(entry, "dist", None)
    where = f" (distribution {dist.name} {dist.version})" if dist is not None else ""
    return f"entry point {entry.name} = {entry.value} in group {GROUP}{where}"


def plugin_entry_points() -> dict[str, EntryPoint]:
    """Installed ``tia.sources`` entry points by name (the first one wins on duplicates)."""
    found: dict[str, EntryPoint] = {}
    for entry in entry_points(group=GROUP):
        found.setdefault(entry.name, entry)
    return found


def load_plugin(name: str) -> Driver | None:
    """The driver the entry point ``name`` provides, ``None`` if no such entry point."""
    from tia.sources import Driver

    entry = plugin_entry_points().get(name)
    if entry is None:
        return None
    try:
        loaded = entry.load()
    except Exception as error:
        raise PluginError(f"{_describe(entry)} failed to load: {type(error).__name__}: {error}") from error
    driver = loaded
    if not isinstance(driver, Driver) and callable(driver):
        try:
            driver = driver()
        except Exception as error:
            raise PluginError(f"{_describe(entry)} failed to build its driver: {error}") from error
    if not isinstance(driver, Driver):
        raise PluginError(
            f"{_describe(entry)} gave {type(driver).__name__}, not a tia.sources.Driver "
            "(or a callable returning one)"
        )
    return replace(driver, name=name) if driver.name != name else driver
