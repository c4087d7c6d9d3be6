"""Twisted endpoint descriptions (``tcp:9000:interface=127.0.0.1``) read as text.

No Twisted here, so the configuration, the server and the clients read the
descriptions users write in one way: arguments split at unescaped ``:``,
``\\`` escaping the next character (``tcp6:9000:interface=\\:\\:1``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EndpointDescription", "parse_description"]


@dataclass(frozen=True)
class EndpointDescription:
    kind: str  # tcp, tcp6, unix, ssl, ... (lower case)
    positional: tuple[str, ...]
    keywords: tuple[tuple[str, str], ...]

    def keyword(self, name: str) -> str | None:
        """The value of ``name=``, or None."""
        return next((value for key, value in self.keywords if key == name), None)

    def first(self, *names: str) -> str | None:
        """The first positional argument, else the first of the keywords ``names`` given."""
        if self.positional:
            return self.positional[0]
        return next((value for name in names if (value := self.keyword(name)) is not None), None)


def parse_description(text: str) -> EndpointDescription:
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    positional: list[str] = []
    keywords: list[tuple[str, str]] = []
    for part in parts[1:]:
        name, equals, value = part.partition("=")
        if equals:
            keywords.append((name.strip(), value.strip()))
        else:
            positional.append(part)
    return EndpointDescription(parts[0].strip().lower(), tuple(positional), tuple(keywords))
