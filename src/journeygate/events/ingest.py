"""Ingestion: a request's events validated one by one, then made durable in one round trip.

With Redis, accepted events are appended to the event streams (``streams.EventStreams``)
before the client gets its answer, and ``journeygate worker`` applies them. Without Redis
(the embedded in-process store) they are applied at once, in the gateway process; they are
then as durable as that process, which is fine for development and demos only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from journeygate.config import EventsConfig
from journeygate.events.apply import Applier
from journeygate.events.schema import EventError
from journeygate.events.streams import EventStreams

Parser = Callable[[Any, str, float, float, float], dict[str, Any]]


@dataclass
class Batch:
    """The outcome of validating one request's events."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    encoded: list[tuple[str, bytes]] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "accepted": [
                {"index": index, "message_id": event["id"]}
                for index, event in zip(self.indexes, self.accepted, strict=True)
            ],
            "rejected": self.rejected,
        }


def parse_batch(
    items: Sequence[Any],
    where: str,
    parse: Parser,
    config: EventsConfig,
    offset: float = 0.0,
    received: float | None = None,
) -> Batch:
    """Validate every item; an invalid one is reported (index, field, reason) and the others
    are still accepted."""
    received = round(time.time() if received is None else received, 3)
    skew = float(config.max_future_skew_s)
    max_bytes = config.max_event_bytes
    batch = Batch()
    for index, item in enumerate(items):
        item_where = f"{where}[{index}]"
        try:
            event = parse(item, item_where, received, offset, skew)
            encoded = orjson.dumps(event)
            if len(encoded) > max_bytes:
                raise EventError(
                    item_where, "event_too_large", f"{item_where} is larger than {max_bytes} bytes"
                )
        except EventError as error:
            batch.rejected.append(error.as_json(index))
        except (TypeError, orjson.JSONEncodeError) as error:
            batch.rejected.append(
                EventError(item_where, "invalid_event", str(error)).as_json(index)
            )
        else:
            batch.accepted.append(event)
            batch.encoded.append((event["v"], encoded))
            batch.indexes.append(index)
    return batch


class Ingestor:
    """Where accepted events go: the Redis streams, or straight to the in-process applier."""

    def __init__(self, streams: EventStreams | None, applier: Applier | None) -> None:
        if (streams is None) == (applier is None):
            raise ValueError("an ingestor needs either streams or an applier")
        self.streams = streams
        self.applier = applier

    @property
    def durable(self) -> bool:
        return self.streams is not None

    async def submit(self, batch: Batch) -> None:
        """Raises ``StoreUnavailable`` when the events could not be stored."""
        if not batch.accepted:
            return
        if self.streams is not None:
            await self.streams.append(batch.encoded)
        else:
            assert self.applier is not None
            await self.applier.apply(batch.accepted)

    async def close(self) -> None:
        if self.streams is not None:
            await self.streams.close()
