"""``journeygate replay``: send a recorded event file through ingestion, to simulate journeys
and test triggers before going live.

The file is JSON Lines, one event per line in the schema of ``POST /v1/events`` (what
``journeygate convert-retail`` writes). Events go to a running gateway in batches, over HTTP,
so they take exactly the path live traffic takes: validation, the Redis streams, the worker.

Timing. ``speed`` N > 0 keeps the recorded pacing, compressed N times (an event an hour after
the first one is sent 3600/N seconds after it); 0 sends as fast as the gateway takes them.
Either way the events keep their recorded timestamps: the gateway applies events by event
time, so sessions, dwell times and order dates come out as recorded whatever the pace.
Recorded timestamps may be far in the past (the Online Retail data is from 2010-2011): the
gateway accepts any past time and only rejects times more than ``max_future_skew_s`` ahead.
Old events do, however, read as old: recency, inactivity and "N days after" triggers measure
from now. ``shift_to_now`` moves the whole file so that its last event is now (the shift is
computed once, before sending), which keeps every gap between events and makes a recorded
journey look like one that just happened.

Idempotence. A message id is applied once per visitor while it is remembered (the last
``dedupe_max`` ids of a visitor, for ``dedupe_ttl_s``), and an order id is counted once for
good, so replaying the same file twice changes nothing within that window.

Failures. A 503 (Redis unavailable: nothing of that batch was accepted) or a connection
error is retried with exponential backoff; events the gateway rejects are counted by reason,
with the file line of the first few.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from journeygate.events.schema import EventError, parse_time

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_BATCH = 100
RETRY_STATUSES = frozenset({502, 503, 504})
MAX_BACKOFF_S = 5.0
EXAMPLES_PER_REASON = 3


class ReplayError(Exception):
    """The replay cannot go on (bad file, rejected write key, gateway gone); one-line message."""


@dataclass
class ReplayStats:
    """What a replay did so far; the summary once it is done."""

    read: int = 0
    sent: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    retries: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def duration_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def events_per_s(self) -> float:
        return self.sent / self.duration_s if self.duration_s > 0 else 0.0

    def reject(self, line: int, code: str, message: str) -> None:
        self.rejected[code] += 1
        examples = self.examples.setdefault(code, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(f"line {line}: {message}")

    def progress_line(self) -> str:
        return (
            f"sent {self.sent}, accepted {self.accepted}, rejected {self.rejected.total()} "
            f"({self.events_per_s:,.0f} events/s)"
        )

    def summary(self) -> str:
        lines = [
            f"read      {self.read} events",
            f"sent      {self.sent}",
            f"accepted  {self.accepted}",
            f"rejected  {self.rejected.total()}",
        ]
        for code, count in self.rejected.most_common():
            lines.append(f"  {code}: {count}")
            lines += [f"    {example}" for example in self.examples.get(code, ())]
        lines += [
            f"retries   {self.retries}",
            f"duration  {self.duration_s:.2f} s",
            f"rate      {self.events_per_s:,.0f} events/s",
        ]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Recorded:
    line: int
    event: Any
    at: float | None  # event time, epoch seconds; None when the event has none


def read_events(path: Path, stats: ReplayStats) -> Iterator[_Recorded]:
    """The events of a JSON Lines file, one by one (the file is never loaded whole). A line
    that is not JSON is counted as rejected (``invalid_json``) and skipped."""
    with path.open("rb") as file:
        for number, raw in enumerate(file, 1):
            if not raw.strip():
                continue
            stats.read += 1
            try:
                event = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                stats.reject(number, "invalid_json", str(exc))
                continue
            at = None
            if isinstance(event, dict):
                # a bad timestamp is sent as is: the gateway says what is wrong with it
                with contextlib.suppress(EventError):
                    at = parse_time(event.get("timestamp"), "timestamp")
            yield _Recorded(number, event, at)


def last_time(path: Path) -> float:
    """The latest event time in the file (a first pass, for ``shift_to_now``)."""
    times = [r.at for r in read_events(path, ReplayStats()) if r.at is not None]
    if not times:
        raise ReplayError(f"{path}: no event has a timestamp to shift")
    return max(times)


class _Sender:
    """POSTs batches to ``/v1/events`` and accounts for the answers."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        write_key: str,
        stats: ReplayStats,
        max_retries: int,
    ) -> None:
        self.session = session
        self.url = url.rstrip("/") + "/v1/events"
        # the write key as the basic auth user name, the way Segment libraries send it
        token = base64.b64encode(f"{write_key}:".encode()).decode()
        self.headers = {"Content-Type": "application/json", "Authorization": f"Basic {token}"}
        self.stats = stats
        self.max_retries = max_retries

    async def send(self, batch: list[_Recorded]) -> None:
        body = orjson.dumps({"events": [r.event for r in batch]})
        delay = 0.2
        for attempt in range(self.max_retries + 1):
            try:
                async with self.session.post(self.url, data=body, headers=self.headers) as response:
                    if response.status == 200:
                        result = await response.json(loads=orjson.loads)
                        break
                    text = await response.text()
                    if response.status not in RETRY_STATUSES:
                        raise ReplayError(_http_error(response.status, text))
                    reason = f"HTTP {response.status}"
                    retry_after = response.headers.get("Retry-After", "")
                    wait = float(retry_after) if retry_after.isdigit() else delay
            except aiohttp.ClientError as exc:
                reason, wait = f"{exc.__class__.__name__}: {exc}", delay
            if attempt == self.max_retries:
                raise ReplayError(f"gave up after {self.max_retries} retries: {reason}")
            self.stats.retries += 1
            await asyncio.sleep(min(max(wait, delay), MAX_BACKOFF_S))
            delay = min(delay * 2, MAX_BACKOFF_S)
        self.stats.sent += len(batch)
        self.stats.accepted += len(result["accepted"])
        for rejection in result["rejected"]:
            self.stats.reject(
                batch[rejection["index"]].line, rejection["code"], rejection["message"]
            )


def _http_error(status: int, text: str) -> str:
    try:
        detail = orjson.loads(text).get("error", {}).get("message") or text
    except (orjson.JSONDecodeError, AttributeError):
        detail = text
    hint = {
        401: " (check --write-key: one of [events] write_keys)",
        413: " (send smaller batches: --batch)",
    }.get(status, "")
    return f"the gateway answered {status}: {str(detail).strip()[:200]}{hint}"


async def replay(
    path: str | Path,
    url: str = DEFAULT_URL,
    write_key: str = "",
    speed: float = 0.0,
    batch_size: int = DEFAULT_BATCH,
    shift_to_now: bool = False,
    max_retries: int = 10,
    progress: Callable[[ReplayStats], None] | None = None,
    progress_interval_s: float = 2.0,
) -> ReplayStats:
    """Replay the event file at ``path`` into the gateway at ``url`` (see the module
    docstring for timing, shifting and retries); returns the summary. Raises
    :class:`ReplayError` when it cannot go on."""
    path = Path(path)
    if batch_size < 1:
        raise ReplayError("the batch size must be at least 1")
    if speed < 0:
        raise ReplayError("the speed must be 0 (as fast as possible) or more")
    shift = time.time() - last_time(path) if shift_to_now else 0.0
    stats = ReplayStats()
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        sender = _Sender(session, url, write_key, stats, max_retries)
        batch: list[_Recorded] = []
        first_at: float | None = None
        last_report = time.monotonic()
        for recorded in read_events(path, stats):
            if shift and recorded.at is not None and isinstance(recorded.event, dict):
                at = round(recorded.at + shift, 3)
                recorded = _Recorded(recorded.line, {**recorded.event, "timestamp": at}, at)
            if speed > 0 and recorded.at is not None:
                first_at = recorded.at if first_at is None else first_at
                due = stats.started + (recorded.at - first_at) / speed
                if due > time.monotonic():
                    if batch:  # what is due goes now, not when the batch is full
                        await sender.send(batch)
                        batch = []
                    await asyncio.sleep(due - time.monotonic())
            batch.append(recorded)
            if len(batch) >= batch_size:
                await sender.send(batch)
                batch = []
            if progress is not None and time.monotonic() - last_report >= progress_interval_s:
                last_report = time.monotonic()
                progress(stats)
        if batch:
            await sender.send(batch)
    stats.finished = time.monotonic()
    return stats
