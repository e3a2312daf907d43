"""In-process profile store: the embedded default when no Redis URL is configured.

Bounded like the Redis store: at most ``memory_max_visitors`` visitors (least recently used
ones are evicted), capped histories, and the same TTLs, checked lazily on access.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from journeygate.config import EventsConfig, StoreConfig
from journeygate.model import StoredVisitor
from journeygate.store.base import (
    Applied,
    MergeStart,
    RawVisitor,
    StageTransition,
    erasure_time,
    floor_ms,
    past_erasure,
)
from journeygate.store.decay import DecayedScore, blended


@dataclass
class _Session:
    expires: float
    pages: int = 0
    views: deque[str] = field(default_factory=deque)


@dataclass
class _EventSession:
    """A session built from events (the Redis store's ``jg:{v}:es:{s}`` keys)."""

    start: float
    expires: float
    fields: dict[str, float] = field(default_factory=dict)
    products: dict[str, float] = field(default_factory=dict)
    categories: dict[str, float] = field(default_factory=dict)
    pages: dict[tuple[str, str, str], float] = field(default_factory=dict)
    searches: deque[str] = field(default_factory=deque)


@dataclass
class _Visitor:
    expires: float
    profile: dict[str, Any] = field(default_factory=dict)
    views: deque[str] = field(default_factory=deque)
    sessions: OrderedDict[str, _Session] = field(default_factory=OrderedDict)
    # built by the event worker
    channels: dict[str, int] = field(default_factory=dict)
    categories: dict[str, float] = field(default_factory=dict)
    purchased: dict[str, float] = field(default_factory=dict)
    orders: dict[str, float] = field(default_factory=dict)
    cart: dict[str, float] = field(default_factory=dict)
    cart_at: float = -1.0
    consents: dict[str, tuple[bool, float]] = field(default_factory=dict)
    esessions: dict[str, _EventSession] = field(default_factory=dict)
    seen: OrderedDict[str, float] = field(default_factory=OrderedDict)
    log: deque[dict[str, Any]] = field(default_factory=deque)
    alias: str | None = None
    aliases: set[str] = field(default_factory=set)
    stages: deque[dict[str, Any]] = field(default_factory=deque)

    def clear_events(self) -> None:
        """Drop what the event worker built (after a merge moved it elsewhere)."""
        for name in ("profile", "channels", "categories", "purchased", "orders", "cart"):
            getattr(self, name).clear()
        self.consents.clear()
        self.esessions.clear()
        self.seen.clear()
        self.log.clear()
        self.stages.clear()
        self.cart_at = -1.0


def _cap(scores: dict[Any, float], max_size: int) -> None:
    """Keep the ``max_size`` highest-scored members (like ZREMRANGEBYRANK on a zset)."""
    while len(scores) > max_size:
        del scores[min(scores, key=lambda member: (scores[member], member))]


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _min(mapping: dict[str, Any], name: str, value: float) -> None:
    if name not in mapping or value < mapping[name]:
        mapping[name] = round(value, 3)


def _max(mapping: dict[str, Any], name: str, value: float) -> None:
    if name not in mapping or value > mapping[name]:
        mapping[name] = round(value, 3)


class MemoryProfileStore:
    """A dictionary of visitors behind the :class:`~journeygate.store.ProfileStore` contract."""

    backend = "memory"

    def __init__(
        self,
        config: StoreConfig,
        clock: Callable[[], float] = time.monotonic,
        events: EventsConfig | None = None,
    ) -> None:
        self.config = config
        self.events = events or EventsConfig()
        self._clock = clock
        self._visitors: OrderedDict[str, _Visitor] = OrderedDict()
        # visitor id -> (erased at, wall clock; expires, store clock)
        self._erased: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._transitions: deque[StageTransition] = deque(maxlen=self.events.transitions_maxlen)

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
        profile_id = await self.resolve_visitor(visitor_id)
        merged = profile_id if profile_id != visitor_id else None
        writes = bool(page_view or session_id)
        visitor = self._visitor(profile_id, create=writes)
        if visitor is None:
            return StoredVisitor(profile_id=merged)
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
            consents={name: granted for name, (granted, _) in visitor.consents.items()},
            profile_id=merged,
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

    def _profile_of(self, visitor_id: str) -> _Visitor:
        visitor = self._visitor(visitor_id, create=True)
        assert visitor is not None
        return visitor

    def _write(self, visitor: _Visitor, fields: Mapping[str, Any]) -> None:
        """Set profile fields (copies) and refresh the profile's TTL. Synchronous, so that a
        method that read the profile first stays atomic on the event loop."""
        visitor.profile.update(copy.deepcopy(dict(fields)))
        visitor.expires = self._clock() + self.config.profile_ttl_s

    async def update_profile(self, visitor_id: str, fields: Mapping[str, Any]) -> None:
        if fields:
            self._write(self._profile_of(visitor_id), fields)

    async def update_profiles(self, updates: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        for visitor_id, fields in updates:
            await self.update_profile(visitor_id, fields)

    async def blend_score(self, visitor_id: str, score: DecayedScore) -> None:
        """Read, blend and write with nothing awaited in between: atomic on the event loop."""
        visitor = self._profile_of(await self.resolve_visitor(visitor_id))
        self._write(visitor, blended(visitor.profile, score))

    async def record_times(
        self,
        visitor_id: str,
        field: str,
        names: Sequence[str],
        at: float,
        window_s: float,
        keep: int,
    ) -> None:
        """Atomic as every method here: nothing is awaited between the read and the write."""
        if not names:
            return
        visitor = self._profile_of(visitor_id)
        at = floor_ms(at)
        stored = visitor.profile.get(field)
        lists: dict[str, list[float]] = {}
        for name, times in stored.items() if isinstance(stored, dict) else ():
            if isinstance(times, list):
                lists[name] = [t for t in times if _is_number(t) and t > at - window_s]
        for name in names:
            lists.setdefault(name, []).append(at)
        kept = {name: sorted(times)[-keep:] for name, times in lists.items() if times}
        self._write(visitor, {field: kept})

    async def merge_latest(self, visitor_id: str, field: str, times: Mapping[str, float]) -> None:
        """Atomic as every method here: nothing is awaited between the read and the write."""
        if not times:
            return
        visitor = self._profile_of(visitor_id)
        stored = visitor.profile.get(field)
        merged = dict(stored) if isinstance(stored, dict) else {}
        for name, at in times.items():
            old = merged.get(name)
            if not (_is_number(old) and old >= at):
                merged[name] = at
        self._write(visitor, {field: merged})

    async def get_profile(self, visitor_id: str) -> dict[str, Any] | None:
        visitor = self._visitor(visitor_id, create=False)
        return copy.deepcopy(visitor.profile) if visitor and visitor.profile else None

    async def delete_visitor(self, visitor_id: str) -> bool:
        pending, removed, done = [visitor_id], False, set()
        erased_at = erasure_time()
        while pending:
            current = pending.pop()
            done.add(current)
            visitor = self._visitors.pop(current, None)
            if any(t.visitor_id == current for t in self._transitions):
                kept = [t for t in self._transitions if t.visitor_id != current]
                self._transitions = deque(kept, maxlen=self._transitions.maxlen)
            self._erased[current] = (erased_at, self._clock() + self.events.erasure_ttl_s)
            self._erased.move_to_end(current)
            while len(self._erased) > self.config.memory_max_visitors:
                self._erased.popitem(last=False)
            if visitor is not None:
                removed = True
                pending += [alias for alias in visitor.aliases if alias not in done]
        await past_erasure(erased_at)
        return removed

    async def merged_ids(self, visitor_id: str) -> list[str]:
        found: list[str] = []
        pending = [visitor_id]
        while pending:
            visitor = self._visitor(pending.pop(), create=False)
            for alias in sorted(visitor.aliases) if visitor is not None else ():
                if alias != visitor_id and alias not in found:
                    found.append(alias)
                    pending.append(alias)
        return found

    # -- events: the same semantics as events.lua in the Redis store -------------------------

    def _erased_at(self, visitor_id: str) -> float:
        entry = self._erased.get(visitor_id)
        if entry is None:
            return -1.0
        if entry[1] <= self._clock():
            del self._erased[visitor_id]
            return -1.0
        return entry[0]

    async def apply_events(
        self, batches: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]
    ) -> list[Applied]:
        results = []
        for visitor_id, events in batches:
            existing = self._visitor(visitor_id, create=False)
            if existing is not None and existing.alias:
                results.append(Applied(visitor_id, redirect=existing.alias))
                continue
            erased = self._erased_at(visitor_id)
            visitor = existing or self._visitor(visitor_id, create=True)
            assert visitor is not None
            now_wall, now = time.time(), self._clock()
            cutoff = now_wall - self.events.dedupe_ttl_s
            while visitor.seen and next(iter(visitor.seen.values())) < cutoff:
                visitor.seen.popitem(last=False)
            flags, duplicates = [], []
            for event in events:
                duplicates.append(event["r"] > erased and event["id"] in visitor.seen)
                if event["r"] <= erased or duplicates[-1]:
                    flags.append(False)
                    continue
                visitor.seen[event["id"]] = now_wall
                self._apply(visitor, event, now)
                if not event.get("u"):
                    visitor.log.appendleft(copy.deepcopy(dict(event)))
                flags.append(True)
            while len(visitor.seen) > self.events.dedupe_max:
                visitor.seen.popitem(last=False)
            while len(visitor.log) > self.events.anonymous_log_max:
                visitor.log.pop()
            sessions = visitor.esessions
            while len(sessions) > self.events.sessions_max:
                del sessions[min(sessions, key=lambda sid: (sessions[sid].start, sid))]
            if any(flags):
                visitor.expires = now + self.config.profile_ttl_s
            results.append(Applied(visitor_id, tuple(flags), duplicates=tuple(duplicates)))
        return results

    def _session_for(
        self, visitor: _Visitor, event: Mapping[str, Any], now: float
    ) -> _EventSession:
        cfg = self.events
        t = event["t"]
        sessions = visitor.esessions
        for expired in [sid for sid, s in sessions.items() if s.expires <= now]:
            del sessions[expired]
        sid: str | None = event.get("s")
        if sid is None:
            started = [
                (s.start, key) for key, s in sessions.items() if s.start <= t + cfg.session_gap_s
            ]
            if started:
                _, latest = max(started)
                if t <= sessions[latest].fields["last"] + cfg.session_gap_s:
                    sid = latest
            if sid is None:
                sid = f"a{int(t * 1000)}"
        session = sessions.get(sid)
        if session is None:
            session = _EventSession(start=round(t, 3), expires=0.0)
            session.searches = deque(maxlen=cfg.session_items_max)
            sessions[sid] = session
        elif t < session.start:
            session.start = round(t, 3)
        session.fields["start"] = session.start
        _max(session.fields, "last", t)
        session.expires = now + cfg.session_retention_s
        return session

    def _apply(self, visitor: _Visitor, event: Mapping[str, Any], now: float) -> None:
        cfg = self.events
        x, kind, t = event.get("x") or {}, event["k"], event["t"]
        profile = visitor.profile

        def incr(mapping: dict[str, Any], name: str, by: float = 1) -> None:
            mapping[name] = mapping.get(name, 0) + by

        def affinity(category: str, weight: float) -> None:
            incr(visitor.categories, category, weight)
            _cap(visitor.categories, cfg.categories_max)

        def cart_snapshot(items: Sequence[Mapping[str, Any]]) -> None:
            if t < visitor.cart_at:
                return
            visitor.cart.clear()
            visitor.cart_at = t
            for item in items:
                incr(visitor.cart, "q:" + item["pid"], item["qty"])
                if "price" in item:
                    visitor.cart["p:" + item["pid"]] = item["price"]

        incr(profile, "events")
        _min(profile, "first_seen", t)
        _max(profile, "last_seen", t)
        incr(visitor.channels, event["c"])
        for name, granted in (x.get("consents") or {}).items():
            current = visitor.consents.get(name)
            if current is None or t >= current[1]:
                visitor.consents[name] = (granted, round(t, 3))
        if kind in ("identify", "alias", "consent"):
            return
        session = self._session_for(visitor, event, now)
        fields = session.fields
        incr(fields, "events")
        incr(fields, "ch:" + event["c"])
        if kind in ("page_view", "screen_view", "product_view"):
            incr(profile, "page_views")
            incr(fields, "pages")
            session.pages[(x.get("pid", ""), x.get("path", ""), event["id"])] = t
            _cap(session.pages, cfg.session_items_max)
            if "pid" in x:
                incr(profile, "product_views")
                incr(session.products, x["pid"])
                _cap(session.products, cfg.session_items_max)
        if "cat" in x:
            incr(session.categories, x["cat"])
            _cap(session.categories, cfg.session_items_max)
            affinity(x["cat"], 2 if kind == "cart_add" else 1)
        if kind == "search":
            incr(profile, "searches")
            incr(fields, "searches")
            session.searches.appendleft(x["q"])
        elif kind in ("cart_add", "cart_remove"):
            if t >= visitor.cart_at:
                sign = 1 if kind == "cart_add" else -1
                incr(visitor.cart, "q:" + x["pid"], sign * x["qty"])
                if "price" in x:
                    visitor.cart["p:" + x["pid"]] = x["price"]
            name = "cart_adds" if kind == "cart_add" else "cart_removes"
            incr(fields, name)
            incr(profile, name)
        elif kind == "order":
            new = True
            if "oid" in x:
                if x["oid"] in visitor.orders:
                    new = False
                else:
                    visitor.orders[x["oid"]] = t
                    _cap(visitor.orders, cfg.orders_max)
            if new:
                incr(profile, "orders")
                incr(profile, "revenue", x.get("rev", 0))
                _min(profile, "first_order_at", t)
                _max(profile, "last_order_at", t)
                incr(fields, "orders")
                incr(fields, "revenue", x.get("rev", 0))
                for item in x.get("items", ()):
                    if item["pid"] not in visitor.purchased or t > visitor.purchased[item["pid"]]:
                        visitor.purchased[item["pid"]] = t
                    if "cat" in item:
                        affinity(item["cat"], 3)
                _cap(visitor.purchased, cfg.purchased_max)
                if t >= visitor.cart_at:
                    visitor.cart.clear()
                    visitor.cart_at = t
        elif kind == "order_refund":
            incr(profile, "refunds")
            incr(profile, "refunded", x.get("rev", 0))
        elif kind == "order_cancel":
            incr(profile, "cancellations")
        if kind == "checkout_start":
            incr(profile, "checkouts")
            incr(fields, "checkouts")
            _max(profile, "last_checkout_at", t)
        if "items" in x and kind in ("cart_view", "checkout_start", "checkout_step"):
            cart_snapshot(x["items"])

    async def resolve_visitor(self, visitor_id: str) -> str:
        for _ in range(4):
            visitor = self._visitor(visitor_id, create=False)
            if visitor is None or not visitor.alias:
                break
            visitor_id = visitor.alias
        return visitor_id

    async def begin_merge(self, anonymous_id: str, user_id: str, received: float) -> MergeStart:
        if self._erased_at(anonymous_id) >= received:
            return MergeStart(erased=True)
        visitor = self._visitor(anonymous_id, create=True)
        assert visitor is not None
        if visitor.alias and visitor.alias != user_id:
            return MergeStart(merged_into=visitor.alias)
        visitor.alias = user_id
        return MergeStart(events=[copy.deepcopy(event) for event in reversed(visitor.log)])

    async def finish_merge(
        self,
        anonymous_id: str,
        user_id: str,
        received: float,
        scores: Sequence[DecayedScore] = (),
    ) -> None:
        if self._erased_at(user_id) >= received:
            await self.delete_visitor(anonymous_id)
            return
        user = self._profile_of(user_id)
        if anonymous_id not in user.aliases:
            user.aliases.add(anonymous_id)
            for score in scores:
                self._write(user, blended(user.profile, score))
        anonymous = self._visitor(anonymous_id, create=False)
        if anonymous is not None:
            anonymous.clear_events()

    async def load_events_profile(self, visitor_id: str) -> RawVisitor | None:
        visitor = self._visitor(visitor_id, create=False)
        if visitor is None or not (visitor.profile or visitor.esessions or visitor.cart):
            return None
        now = self._clock()

        def ranked(scores: Mapping[str, float]) -> list[tuple[str, float]]:
            # like ZREVRANGE: highest score first, ties in reverse lexicographic order
            pairs = sorted(scores.items(), key=lambda pair: (pair[1], pair[0]), reverse=True)
            return [(member, float(score)) for member, score in pairs]

        sessions = [
            {
                "id": sid,
                "fields": dict(session.fields),
                "products": ranked(session.products),
                "categories": ranked(session.categories),
                "pages": sorted(
                    (([pid, path], at) for (pid, path, _), at in session.pages.items()),
                    key=lambda page: page[1],
                ),
                "searches": list(session.searches)[: self.events.session_items_max],
            }
            for sid, session in sorted(
                visitor.esessions.items(), key=lambda pair: (-pair[1].start, pair[0])
            )
            if session.expires > now
        ]
        cart = {
            name[2:]: (int(quantity), visitor.cart.get("p:" + name[2:]))
            for name, quantity in visitor.cart.items()
            if name.startswith("q:") and quantity > 0
        }
        return RawVisitor(
            profile=copy.deepcopy(visitor.profile),
            channels=dict(visitor.channels),
            categories=ranked(visitor.categories),
            purchased=ranked(visitor.purchased),
            consents=dict(visitor.consents),
            cart=cart,
            aliases=sorted(visitor.aliases),
            sessions=sessions,
        )

    async def record_stage(
        self, visitor_id: str, stage: str, at: float, decision_id: str
    ) -> StageTransition | None:
        visitor = self._profile_of(visitor_id)
        before = visitor.profile.get("stage")
        if before == stage:
            return None
        at = round(at, 3)
        self._write(visitor, {"stage": stage, "stage_since": at})
        visitor.stages.appendleft(
            {"from": before, "to": stage, "at": at, "decision_id": decision_id}
        )
        while len(visitor.stages) > self.events.stage_history_max:
            visitor.stages.pop()
        transition = StageTransition(
            visitor_id, before if isinstance(before, str) else None, stage, at, decision_id
        )
        self._transitions.append(transition)
        return transition

    async def journey_transitions(
        self, since: float, until: float, limit: int
    ) -> list[StageTransition]:
        found = [t for t in self._transitions if since <= t.at <= until]
        return found[:limit]

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._visitors.clear()
