"""``journeygate webhooks log | dead-letters | redeliver``: the delivery log and the dead
letters in Redis (registered by ``journeygate.cli``). Errors end with a one-line message and
exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from journeygate.cliutil import fail, positive_int
from journeygate.config import AppConfig
from journeygate.store import StoreUnavailable
from journeygate.store.redis import RedisProfileStore
from journeygate.webhooks.redis import RedisOutbox

TIMEOUT_MS = 5000
ENTRY_ID = re.compile(r"\d+-\d+")


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _with_outbox(config: AppConfig, action: Callable[[RedisOutbox], Awaitable[int]]) -> int:
    """Run ``action`` on the Redis outbox (endpoints need not be configured to read it)."""
    if config.store_backend != "redis":
        return fail(
            "webhook deliveries are kept in Redis (without it, in the gateway process): "
            "set REDIS_URL (or store.redis_url)"
        )

    async def run() -> int:
        store = RedisProfileStore(replace(config.store, timeout_ms=TIMEOUT_MS), config.events)
        try:
            return await action(RedisOutbox(store.client, config.webhooks))
        except StoreUnavailable as exc:
            return fail(str(exc))
        finally:
            await store.close()

    return asyncio.run(run())


def log_command(args: argparse.Namespace, config: AppConfig) -> int:
    """Newest outcomes first: one line per attempt."""

    async def show(outbox: RedisOutbox) -> int:
        entries = await outbox.log(args.count)
        for e in entries:
            status = e.status if e.status is not None else "-"
            print(
                f"{e.entry_id}\t{_when(e.at)}\t{e.outcome}\t{e.endpoint}\t{e.event_type}\t"
                f"{e.delivery_id}\tattempt={e.attempt}\tstatus={status}\t{e.latency_ms:.0f}ms"
                + (f"\t{e.error}" if e.error else "")
            )
        print(f"{len(entries)} outcome(s) shown", file=sys.stderr)
        return 0

    return _with_outbox(config, show)


def dead_letters_command(args: argparse.Namespace, config: AppConfig) -> int:
    """Newest dead letters first, with the last error."""

    async def show(outbox: RedisOutbox) -> int:
        letters = await outbox.dead_letters(args.count)
        for letter in letters:
            d = letter.delivery
            status = letter.status if letter.status is not None else "-"
            print(
                f"{letter.entry_id}\t{_when(letter.at)}\t{d.endpoint}\t{d.event_type}\t{d.id}\t"
                f"attempts={d.attempt}\tstatus={status}\t{letter.error}"
            )
        print(f"{len(letters)} dead letter(s) shown", file=sys.stderr)
        return 0

    return _with_outbox(config, show)


def redeliver_command(args: argparse.Namespace, config: AppConfig) -> int:
    """Move dead letters back to the outbox; exit status 1 when an id was not found."""
    if bool(args.ids) == args.all:
        return fail("webhooks redeliver: give dead letter ids or --all (not both)")
    malformed = [entry_id for entry_id in args.ids if not ENTRY_ID.fullmatch(entry_id)]
    if malformed:
        return fail(f"webhooks redeliver: not a dead letter id: {malformed[0]!r}")

    async def move(outbox: RedisOutbox) -> int:
        if args.all:
            moved = await outbox.redeliver(None)
            print(f"{len(moved)} dead letter(s) back in the outbox")
            return 0
        moved = await outbox.redeliver(args.ids)
        for entry_id in args.ids:
            print(f"{entry_id}\t{'redelivered' if entry_id in moved else 'not found'}")
        return 0 if len(moved) == len(args.ids) else 1

    return _with_outbox(config, move)


def register(sub: Any) -> None:
    """Add ``webhooks log | dead-letters | redeliver`` to the ``journeygate`` subparsers."""
    webhooks = sub.add_parser("webhooks", help="webhook delivery log and dead letters (Redis)")
    commands = webhooks.add_subparsers(dest="webhooks_command", required=True)
    log = commands.add_parser("log", help="newest delivery outcomes first")
    log.add_argument("--count", type=positive_int, default=20, help="newest N (default 20)")
    log.set_defaults(handler=log_command)
    dead = commands.add_parser("dead-letters", help="deliveries given up on, newest first")
    dead.add_argument("--count", type=positive_int, default=20, help="newest N (default 20)")
    dead.set_defaults(handler=dead_letters_command)
    redeliver = commands.add_parser(
        "redeliver", help="move dead letters back to the outbox (attempt 1, same delivery id)"
    )
    redeliver.add_argument("ids", nargs="*", metavar="ID", help="dead letter ids, as listed")
    redeliver.add_argument("--all", action="store_true", help="every dead letter")
    redeliver.set_defaults(handler=redeliver_command)
