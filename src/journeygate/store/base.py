"""The profile store contract and the factory that picks an implementation from config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from journeygate.config import StoreConfig
from journeygate.model import StoredVisitor


class StoreUnavailable(RuntimeError):
    """The backing store could not be reached in time."""


class ProfileStore(Protocol):
    """What the gateway needs from profile storage. Every method is one round trip."""

    backend: str

    async def load_visitor(
        self, visitor_id: str, session_id: str | None, page_view: str | None = None
    ) -> StoredVisitor:
        """Read the profile, view history and session; record ``page_view`` if given.

        The state returned is the state *before* the page view is recorded. Raises
        :class:`StoreUnavailable` when the store cannot answer within its timeout.
        """
        ...

    async def update_profile(self, visitor_id: str, fields: Mapping[str, Any]) -> None:
        """Set profile fields (JSON values) and refresh the profile's TTL."""
        ...

    async def get_profile(self, visitor_id: str) -> dict[str, Any] | None:
        """The stored profile fields, or None when the visitor is unknown."""
        ...

    async def delete_visitor(self, visitor_id: str) -> bool:
        """Erase everything stored for a visitor; True when there was anything to erase."""
        ...

    async def ping(self) -> bool:
        """True when the store answers."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def open_store(config: StoreConfig, backend: str) -> ProfileStore:
    """Create the store named by ``backend`` (``redis`` or ``memory``)."""
    if backend == "redis":
        from journeygate.store.redis import RedisProfileStore

        return RedisProfileStore(config)
    from journeygate.store.memory import MemoryProfileStore

    return MemoryProfileStore(config)
