"""The interactions log: what the gateway's events taught the recommender, kept on disk for
``journeygate train --from-events``.

The event streams are trimmed and profiles keep aggregates, so the recommender records its
own history: every applied event that is an interaction becomes rows of the interactions
table (:mod:`jg_recommender.interactions`), appended as JSON Lines to
``<dir>/<YYYY-MM-DD>.<host>-<pid>.jsonl``:

* one file per process and (UTC, wall-clock) day, so several workers append without locks
  and a day is a unit of retention; the day is when a row was written, not the event time, so
  a replay of old data is kept like fresh data;
* rows are buffered in memory and written by a background task in a thread (the observer
  runs on the worker's event loop), one ``write`` of whole lines per flush; a process killed
  mid-write leaves at most one partial last line, which the reader skips;
* on every rotation (the first write of a process and each new day) files written more than
  ``retention_days`` ago are deleted, by any process.

Kinds recorded (``EVENT_WEIGHTS`` names): ``product_view`` -> ``view``; ``cart_add`` ->
``cart_add``; ``order`` -> one ``purchase`` per line item, the order id as basket; a click on
a recommendation block -> ``block_click``: ``Block Clicked``/``block_click`` events (kind
``block_click``; ``block_clicked`` is kept as ``custom``), or ``Product Clicked`` carrying the
block's ``decision_id``. A plain product click
is not recorded (the product view it leads to is). Identity links (``identify``/``alias`` with
both ids) are recorded as ``link`` rows so history logged under an anonymous id before the
visitor logged in is credited to the customer at training time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from jg_recommender.interactions import COLUMNS, from_events
from journeygate.events.schema import Event

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"
LINK = "link"
BLOCK_CLICK_NAMES = frozenset({"Block Clicked", "block_click", "block_clicked"})
MAX_ID = 128
_DAY = re.compile(r"^(\d{4}-\d{2}-\d{2})\.")


def _product_id(event: Event) -> str | None:
    pid = event.fields.get("pid")
    if pid is None:
        props = event.properties
        pid = props.get("product_id") or props.get("sku") or props.get("id")
    if isinstance(pid, int | float) and not isinstance(pid, bool):
        pid = str(pid)
    return pid if isinstance(pid, str) and 0 < len(pid) <= MAX_ID else None


def interaction_rows(event: Event) -> list[dict[str, Any]]:
    """The log rows of one applied event (none for events that are not interactions)."""
    kind = event.kind
    base = {"user_id": event.profile_id, "timestamp": event.timestamp}
    if kind == "product_view" or kind == "cart_add":
        pid = _product_id(event)
        if pid is None:
            return []
        quantity = float(event.fields.get("qty", 1)) if kind == "cart_add" else 1.0
        name = "view" if kind == "product_view" else "cart_add"
        return [{**base, "item_id": pid, "event": name, "quantity": quantity, "basket_id": None}]
    if kind == "order":
        basket = event.fields.get("oid") or event.message_id
        return [
            {
                **base,
                "item_id": str(item["pid"]),
                "event": "purchase",
                "quantity": float(item.get("qty", 1)),
                "basket_id": str(basket),
            }
            for item in event.fields.get("items") or ()
            if item.get("pid")
        ]
    clicked = (
        kind == "block_click"
        or (kind == "custom" and event.name in BLOCK_CLICK_NAMES)
        or (kind == "product_click" and event.properties.get("decision_id"))
    )
    if clicked:
        pid = _product_id(event)
        if pid is None:
            return []
        return [
            {**base, "item_id": pid, "event": "block_click", "quantity": 1.0, "basket_id": None}
        ]
    if kind in ("identify", "alias") and event.user_id and event.anonymous_id:
        return [{**base, "event": LINK, "user_id": event.user_id, "item_id": event.anonymous_id}]
    return []


def _file_day(path: Path) -> date | None:
    match = _DAY.match(path.name)
    if match is None or not path.name.endswith(SUFFIX):
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None


def log_files(directory: Path) -> list[Path]:
    """The log's files, oldest day first."""
    if not directory.is_dir():
        return []
    files = [path for path in directory.iterdir() if _file_day(path) is not None]
    return sorted(files, key=lambda path: (_file_day(path), path.name))


def delete_expired(directory: Path, retention_days: int, today: date) -> list[Path]:
    """Delete the files written more than ``retention_days`` before ``today``."""
    oldest = today - timedelta(days=retention_days)
    deleted = []
    for path in log_files(directory):
        day = _file_day(path)
        if day is not None and day < oldest:
            with contextlib.suppress(FileNotFoundError):  # another process got there first
                path.unlink()
                deleted.append(path)
    return deleted


def _process_tag() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
    return f"{host}-{os.getpid()}"


class InteractionLog:
    """Buffered, append-only writer of this process's interaction rows."""

    def __init__(
        self,
        directory: Path,
        retention_days: int = 400,
        flush_interval_s: float = 1.0,
        max_buffer: int = 5000,
        clock: Any = time.time,
    ) -> None:
        self.directory = directory
        self.retention_days = retention_days
        self.flush_interval_s = flush_interval_s
        self.max_buffer = max_buffer
        self.clock = clock
        self.written = 0
        self._tag = _process_tag()
        self._buffer: list[dict[str, Any]] = []
        self._day: date | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background flusher (on the running loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="jg-interaction-log")

    def record(self, event: Event) -> int:
        """Buffer the rows of ``event`` (cheap, on the loop); returns how many."""
        rows = interaction_rows(event)
        if rows:
            self._buffer += rows
            if len(self._buffer) >= self.max_buffer:
                self._wake.set()
        return len(rows)

    async def flush(self) -> int:
        """Write what is buffered, in a thread; returns the rows written."""
        async with self._lock:
            rows, self._buffer = self._buffer, []
            if not rows:
                return 0
            try:
                await asyncio.to_thread(self._write, rows)
            except Exception:
                self._buffer[:0] = rows  # kept for the next flush
                raise
            self.written += len(rows)
            return len(rows)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("could not write the interactions log in %s", self.directory)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        today = datetime.fromtimestamp(self.clock(), UTC).date()
        if today != self._day:  # rotation: a new file, and the old ones expire
            self.directory.mkdir(parents=True, exist_ok=True)
            for path in delete_expired(self.directory, self.retention_days, today):
                log.info("interactions log: deleted %s (retention)", path.name)
            self._day = today
        path = self.directory / f"{today.isoformat()}.{self._tag}{SUFFIX}"
        data = b"".join(orjson.dumps(row) + b"\n" for row in rows)
        with path.open("ab") as handle:
            handle.write(data)


def read_rows(directory: Path) -> Iterator[dict[str, Any]]:
    """Every row of every retained file; lines that are not whole JSON objects (a process
    killed mid-write) are skipped and counted in the log."""
    for path in log_files(directory):
        skipped = 0
        with path.open("rb") as handle:
            for line in handle:
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError:
                    skipped += 1
                    continue
                if isinstance(row, dict):
                    yield row
                else:
                    skipped += 1
        if skipped:
            log.warning("interactions log %s: %d unreadable lines skipped", path.name, skipped)


def stitch(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Interaction rows with anonymous ids replaced by the customer they were linked to."""
    interactions: list[dict[str, Any]] = []
    owner: dict[str, str] = {}
    for row in rows:
        if row.get("event") == LINK:
            owner[str(row["item_id"])] = str(row["user_id"])
        else:
            interactions.append(dict(row))
    for row in interactions:
        user = str(row["user_id"])
        for _ in range(4):  # a short chain of links at most (anonymous -> user -> ...)
            if user not in owner or owner[user] == user:
                break
            user = owner[user]
        row["user_id"] = user
    return interactions


def load_logged_interactions(directory: Path) -> pd.DataFrame:
    """The log as an interactions table (``from_events``: weighted by ``EVENT_WEIGHTS``)."""
    frame = pd.DataFrame.from_records(stitch(read_rows(directory)), columns=list(COLUMNS))
    # epoch seconds -> naive UTC datetimes, like the Online Retail invoice times
    frame["timestamp"] = pd.to_datetime(frame["timestamp"].astype(float), unit="s")
    return from_events(frame.to_dict("records"))
