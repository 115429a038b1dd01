"""Named registries: one per axis of the library (model family, estimator, observation model,
prior, posterior, network).

A registry maps a name to an entry. Looking up an unknown name raises a
:class:`~vaekit.errors.ConfigError` that lists the known names (``model must be one of vae,
...; got 'x'``), so every ``--model``, ``--objective``, ``--likelihood`` ... error says what
the choices are. ``kind`` is the option's name as the user types it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError, did_you_mean

T = TypeVar("T")
_MISSING = object()


class Registry(Generic[T]):
    """``name -> entry`` for one kind of thing (``kind`` names it in error messages).

    Entries are added with :meth:`register` (or the :meth:`decorator`) and read with
    :meth:`get`; iterating yields the names in registration order.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Add ``entry`` under ``name``.

        Raises:
            ValueError: ``name`` is taken (unless ``replace``).
        """
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str) -> Callable[[T], T]:
        """``@REGISTRY.decorator("name")`` registers the decorated object."""
        return lambda entry: self.register(name, entry)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests register toy entries and remove them again)."""
        self._entries.pop(name, None)

    def get(self, name: str, default=_MISSING) -> T:
        """The entry of ``name`` (``default``, when given, for a name not registered).

        Raises:
            ConfigError: ``name`` is not registered and no default is given; the message
                lists the choices.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            if default is not _MISSING:
                return default
            raise ConfigError(f"{self.kind} must be one of {', '.join(self._entries)}; "
                              f"got {name!r}{did_you_mean(name, self._entries)}") from None

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self):
        return self._entries.items()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __setitem__(self, name: str, entry: T) -> None:      # monkeypatch.setitem in tests
        self.register(name, entry, replace=True)

    def __delitem__(self, name: str) -> None:
        self.unregister(name)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
