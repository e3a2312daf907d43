"""Profile storage: the visitor's stored profile, view history and sessions.

Two implementations share one contract (:class:`ProfileStore`): Redis for production and an
in-process store as the embedded default when no Redis URL is configured.
"""

from journeygate.store.base import (
    Applied,
    EventsRejected,
    MergeStart,
    ProfileStore,
    RawVisitor,
    StageTransition,
    StoreUnavailable,
    open_store,
)
from journeygate.store.decay import DecayedScore

__all__ = [
    "Applied",
    "DecayedScore",
    "EventsRejected",
    "MergeStart",
    "ProfileStore",
    "RawVisitor",
    "StageTransition",
    "StoreUnavailable",
    "open_store",
]
