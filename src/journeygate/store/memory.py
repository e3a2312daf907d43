"""In-process profile store: the embedded default when no Redis URL is configured.

Bounded like the Redis store: at most ``memory_max_visitors`` visitors (least recently used
ones are evicted), capped histories, and the same TTLs, checked lazily on access.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from journeygate.config import StoreConfig
from journeygate.model import StoredVisitor


@dataclass
class _Session:
    expires: float
    pages: int = 0
    views: deque[str] = field(default_factory=deque)


@dataclass
class _Visitor:
    expires: float
    profile: dict[str, Any] = field(default_factory=dict)
    views: deque[str] = field(default_factory=deque)
    sessions: OrderedDict[str, _Session] = field(default_factory=OrderedDict)


class MemoryProfileStore:
    """A dictionary of visitors behind the :class:`~journeygate.store.ProfileStore` contract."""

    backend = "memory"

    def __init__(self, config: StoreConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._visitors: OrderedDict[str, _Visitor] = OrderedDict()

    def _visitor(self, visitor_id: str, create: bool) -> _Visitor | None:
        now = self._clock()
        visitor = self._visitors.get(visitor_id)
        if visitor is not None and visitor.expires <= now:
            del self._visitors[visitor_id]
            visitor = None
        if visitor is None and create:
            visitor = _Visitor(expires=now + self.config.profile_ttl_s)
            visitor.views = deque(maxlen=self.config.history_max)
            self._visitors[visitor_id] = visitor
            while len(self._visitors) > self.config.memory_max_visitors:
                self._visitors.popitem(last=False)
        if visitor is not None:
            self._visitors.move_to_end(visitor_id)
        return visitor

    async def load_visitor(
        self, visitor_id: str, session_id: str | None, page_view: str | None = None
    ) -> StoredVisitor:
        writes = bool(page_view or session_id)
        visitor = self._visitor(visitor_id, create=writes)
        if visitor is None:
            return StoredVisitor()
        now = self._clock()
        session = visitor.sessions.get(session_id) if session_id else None
        if session is not None and session.expires <= now:
            del visitor.sessions[session_id]  # type: ignore[arg-type]
            session = None
        state = StoredVisitor(
            profile=copy.deepcopy(visitor.profile),
            recent_views=tuple(reversed(visitor.views)),
            session_views=tuple(reversed(session.views)) if session else (),
            session_pages=session.pages if session else 0,
        )
        if page_view:
            visitor.views.append(page_view)
            visitor.expires = now + self.config.profile_ttl_s
        if session_id:
            if session is None:
                session = _Session(expires=0, views=deque(maxlen=self.config.session_views_max))
                visitor.sessions[session_id] = session
            session.pages += 1
            session.expires = now + self.config.session_ttl_s
            if page_view:
                session.views.append(page_view)
            visitor.sessions.move_to_end(session_id)
            while len(visitor.sessions) > self.config.history_max:
                visitor.sessions.popitem(last=False)
            visitor.expires = now + self.config.profile_ttl_s
        return state

    async def update_profile(self, visitor_id: str, fields: Mapping[str, Any]) -> None:
        if not fields:
            return
        visitor = self._visitor(visitor_id, create=True)
        assert visitor is not None
        visitor.profile.update(copy.deepcopy(dict(fields)))
        visitor.expires = self._clock() + self.config.profile_ttl_s

    async def get_profile(self, visitor_id: str) -> dict[str, Any] | None:
        visitor = self._visitor(visitor_id, create=False)
        return copy.deepcopy(visitor.profile) if visitor and visitor.profile else None

    async def delete_visitor(self, visitor_id: str) -> bool:
        return self._visitors.pop(visitor_id, None) is not None

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._visitors.clear()
