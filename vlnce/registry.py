"""Explicit, per-kind registries of named components (backends, measures, plugins, models).

Each package owns its registries as module attributes filled at import time. Tests create fresh
``Registry`` objects rather than adding to the shared ones.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from vlnce.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to components of one kind.

    Args:
        kind: What is registered, used in error messages ("simulator backend").
        base: Optional class every registered class must subclass.
    """

    def __init__(self, kind: str, base: type | None = None) -> None:
        self.kind = kind
        self.base = base
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering a class or function under ``name``.

        Raises:
            ValueError: if ``name`` is taken or the class does not subclass ``base``.
        """

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` under ``name`` (see ``register``)."""
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if self.base is not None and not (isinstance(obj, type) and issubclass(obj, self.base)):
            raise ValueError(f"{self.kind} {name!r} must subclass {self.base.__name__}, got {obj!r}")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        """Return the component registered as ``name``.

        Raises:
            UnknownNameError: naming the known entries and the closest match.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        known = sorted(self._entries)
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(known) or 'none'})"

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
