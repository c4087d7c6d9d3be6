"""Reading INI sections: ``ConfigError`` and the section reader every parser uses.

Every problem is reported with the file, section and key at fault and what
was expected. A section's keys are consumed as they are read, so whatever is
left over is an unknown key, and an error too: a typo that silently does
nothing costs a recording.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction

SWITCHES = {"on": True, "yes": True, "true": True, "1": True, "off": False, "no": False, "false": False, "0": False}


class ConfigError(ValueError):
    """A configuration the server will not start with.

    ``str()`` is one line: ``FILE [SECTION] KEY: message``, each part only when
    known; ``key`` may also name a command-line option (``--port``).
    """

    def __init__(
        self, message: str, path: str | None = None, section: str | None = None, key: str | None = None
    ) -> None:
        self.path, self.section, self.key, self.message = path, section, key, message
        where = place(path, section, key)
        super().__init__((where + ": " if where else "") + message)


def place(path: str | None, section: str | None = None, key: str | None = None) -> str:
    """Where in the configuration something was written: ``FILE [SECTION] KEY``, each part when known."""
    where = []
    if path:
        where.append(str(path))
    if section:
        where.append(f"[{section}]")
    if key:
        where.append(key)
    return " ".join(where)


class Section:
    """One INI section whose keys are consumed as they are read; leftovers are errors."""

    def __init__(self, path: str | None, name: str, items: Mapping[str, str] | None = None) -> None:
        self.path, self.name = path, name
        self._items = dict(items or {})
        self._used: set[str] = set()

    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(message, self.path, self.name, key)

    def has(self, key: str) -> bool:
        return key in self._items

    def text(self, key: str, default: str | None = None) -> str | None:
        self._used.add(key)
        value = self._items.get(key)
        if value is None:
            return default
        return value.strip()

    def required(self, key: str, expected: str) -> str:
        value = self.text(key)
        if not value:
            raise self.error(key, f"missing; expected {expected}")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.text(key)
        if value is None or value == "":
            return default
        try:
            number = int(value)
        except ValueError:
            raise self.error(key, f"{value!r} is not an integer") from None
        if not low <= number <= high:
            raise self.error(key, f"{number} is out of range {low}..{high}")
        return number

    def positive(self, key: str, default: float) -> float:
        value = self.text(key)
        if value is None or value == "":
            return default
        try:
            number = float(value)
        except ValueError:
            raise self.error(key, f"{value!r} is not a number") from None
        if not number > 0 or number == float("inf"):
            raise self.error(key, f"{value!r} must be a positive number")
        return number

    def choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        value = (self.text(key) or default).lower()
        if value not in choices:
            raise self.error(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def switch(self, key: str, default: bool) -> bool:
        """``on``/``off`` (also yes/no, true/false, 1/0)."""
        text = (self.text(key) or "").lower()
        if not text:
            return default
        if text not in SWITCHES:
            raise self.error(key, f"{text!r} is not on or off")
        return SWITCHES[text]

    def check_all_used(self, extra: str = "") -> None:
        unknown = sorted(set(self._items) - self._used)
        if unknown:
            raise self.error(unknown[0], f"unknown key{extra}")

    def remaining(self) -> list[str]:
        return [key for key in self._items if key not in self._used]


def format_rate(value: Fraction) -> str:
    """A rate for a message: ``512``, or ``0.5`` when it is not whole."""
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"
