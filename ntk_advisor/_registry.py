"""Named implementations that the rest of the code asks for by name (methods/, tasks/)."""

from __future__ import annotations

from typing import Generic, TypeVar

from .errors import NtkAdvisorError

T = TypeVar("T")


class Registry(Generic[T]):
    """``register`` an object by its ``name``; ``get`` it back, or a one-line error listing the choices.

    ``also`` names choices that are not entries (``auto`` for tasks), for that error.
    """

    def __init__(self, what: str, error: type[NtkAdvisorError], also: tuple[str, ...] = ()):
        self.what, self.error, self.also = what, error, also
        self.entries: dict[str, T] = {}

    def register(self, entry: T) -> T:
        """Registering a name twice replaces the first."""
        self.entries[entry.name] = entry
        return entry

    def names(self) -> tuple[str, ...]:
        return tuple(self.entries)

    def get(self, name: str) -> T:
        if name not in self.entries:
            raise self.error(f"unknown {self.what} '{name}': use one of {', '.join(self.also + self.names())}")
        return self.entries[name]

    def values(self) -> list[T]:
        return list(self.entries.values())
