"""Redis key names, built in one place.

Every key of one visitor carries the hash tag ``{visitor_id}`` so that all of them live on
the same Redis Cluster slot and one pipeline or transaction can touch them together.

=================================  =======  ==========================  =====================
key                                type     bound                       TTL
=================================  =======  ==========================  =====================
``jg:{v}:profile``                 hash     fields set by the gateway   ``profile_ttl_s``
``jg:{v}:views``                   list     ``history_max`` entries     ``profile_ttl_s``
``jg:{v}:sessions``                zset     ``history_max`` sessions    ``profile_ttl_s``
``jg:{v}:session:{s}``             hash     3 fields                    ``session_ttl_s``
``jg:{v}:session:{s}:views``       list     ``session_views_max``       ``session_ttl_s``
=================================  =======  ==========================  =====================
"""

from __future__ import annotations

PREFIX = "jg"


def visitor_key(visitor_id: str, *parts: str) -> str:
    return ":".join((PREFIX, "{" + visitor_id + "}", *parts))


def profile(visitor_id: str) -> str:
    return visitor_key(visitor_id, "profile")


def views(visitor_id: str) -> str:
    return visitor_key(visitor_id, "views")


def sessions(visitor_id: str) -> str:
    return visitor_key(visitor_id, "sessions")


def session(visitor_id: str, session_id: str) -> str:
    return visitor_key(visitor_id, "session", session_id)


def session_views(visitor_id: str, session_id: str) -> str:
    return visitor_key(visitor_id, "session", session_id, "views")
