"""The ``replay``, ``convert-retail`` and ``dead-letters`` subcommands (registered by
``journeygate.cli``).

Both end with a one-line message and exit status 2 on bad input, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import date
from typing import Any

from journeygate.cliutil import fail, positive_int
from journeygate.config import AppConfig

WRITE_KEY_ENV = "JOURNEYGATE_WRITE_KEY"


def _speed(value: str) -> float:
    if value == "max":
        return 0.0
    try:
        speed = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'max': {value!r}") from None
    if speed < 0:
        raise argparse.ArgumentTypeError("must be 0 (as fast as possible) or more")
    return speed


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def replay_command(args: argparse.Namespace, config: AppConfig) -> int:
    """``journeygate replay``: progress on stderr, the summary on stdout."""
    from journeygate.events.replay import ReplayError, replay

    write_key = (
        args.write_key
        or os.environ.get(WRITE_KEY_ENV)
        or (config.events.write_keys[0] if config.events.write_keys else "")
    )
    if not write_key:
        return fail(f"no write key: pass --write-key, set {WRITE_KEY_ENV} or [events] write_keys")

    def progress(stats: Any) -> None:
        print(f"replay: {stats.progress_line()}", file=sys.stderr, flush=True)

    try:
        stats = asyncio.run(
            replay(
                args.file,
                url=args.url,
                write_key=write_key,
                speed=args.speed,
                batch_size=args.batch,
                shift_to_now=args.shift_to_now,
                progress=progress,
            )
        )
    except ReplayError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return fail("interrupted")
    print(stats.summary())
    return 0


def convert_retail_command(args: argparse.Namespace, config: AppConfig) -> int:
    """``journeygate convert-retail``."""
    from journeygate.events.retail_events import convert_retail

    try:
        customers, invoices, events = convert_retail(
            args.file, args.out, args.customers, args.since
        )
    except ValueError as exc:  # not the Online Retail layout, or not a table at all
        return fail(f"{args.file}: {str(exc).splitlines()[0]}")
    print(f"{events} events from {invoices} invoices of {customers} customers -> {args.out}")
    return 0


def dead_letters_command(args: argparse.Namespace, config: AppConfig) -> int:
    """``journeygate dead-letters``: list the newest dead letters, or requeue some."""
    from journeygate.events.streams import Backpressure, EventStreams
    from journeygate.store import StoreUnavailable

    if config.store_backend != "redis":
        return fail("dead letters live in Redis: set REDIS_URL (or store.redis_url)")

    async def run() -> int:
        streams = EventStreams(config.store.redis_url, config.events, 5.0)
        try:
            if args.requeue:
                requeued = await streams.requeue(args.requeue)
                for dead_letter_id in args.requeue:
                    state = "requeued" if dead_letter_id in requeued else "not found"
                    print(f"{dead_letter_id}\t{state}")
                return 0 if len(requeued) == len(args.requeue) else 1
            letters = await streams.dead_letters(args.count)
            for letter in letters:
                print(
                    f"{letter.dead_letter_id}\t{letter.stream} {letter.entry_id}\t"
                    f"deliveries={letter.deliveries}\t{letter.error}"
                )
            print(f"{len(letters)} dead letter(s) shown", file=sys.stderr)
            return 0
        except Backpressure as exc:
            return fail(f"nothing requeued: {exc}; requeue once the workers have caught up")
        except StoreUnavailable as exc:
            return fail(str(exc))
        finally:
            await streams.close()

    return asyncio.run(run())


def journey_map_command(args: argparse.Namespace, config: AppConfig) -> int:
    """``journeygate journey-map``: stage transition counts over the last hours."""
    import time

    from journeygate.events.journey import journey_map
    from journeygate.store import StoreUnavailable, open_store

    if config.store_backend != "redis":
        return fail("the journey map is read from Redis: set REDIS_URL (or store.redis_url)")

    async def run() -> int:
        store = open_store(config.store, "redis", config.events)
        until = time.time()
        try:
            found = await journey_map(
                store, until - args.hours * 3600, until, config.events.transitions_maxlen
            )
        except StoreUnavailable as exc:
            return fail(str(exc))
        finally:
            await store.close()
        print(found.table())
        return 0

    return asyncio.run(run())


def register(sub: Any) -> None:
    """Add the subcommands to the ``journeygate`` subparsers."""
    from journeygate.events.replay import DEFAULT_BATCH, DEFAULT_URL

    replay = sub.add_parser(
        "replay", help="replay a recorded event file (JSON Lines) through a running gateway"
    )
    replay.add_argument("file", help="JSON Lines file, one event of POST /v1/events per line")
    replay.add_argument("--url", default=DEFAULT_URL, help=f"the gateway (default {DEFAULT_URL})")
    replay.add_argument(
        "--speed",
        type=_speed,
        default=0.0,
        help="compress the recorded timing N times; 0 or 'max': as fast as possible (default)",
    )
    replay.add_argument(
        "--write-key",
        help=f"write key (default: ${WRITE_KEY_ENV}, else the first of [events] write_keys)",
    )
    replay.add_argument(
        "--batch",
        type=positive_int,
        default=DEFAULT_BATCH,
        help=f"events per request (default {DEFAULT_BATCH})",
    )
    replay.add_argument(
        "--shift-to-now",
        action="store_true",
        help="move every timestamp by the same amount so the last event is now",
    )
    replay.set_defaults(handler=replay_command)

    convert = sub.add_parser(
        "convert-retail", help="turn Online Retail data into an event file for replay"
    )
    convert.add_argument("file", help="Online Retail file (CSV, CSV.gz or Parquet)")
    convert.add_argument("out", help="event file to write (JSON Lines)")
    convert.add_argument(
        "--customers", type=positive_int, help="only the N customers with the lowest ids"
    )
    convert.add_argument("--since", type=_date, help="only invoices from this date (YYYY-MM-DD)")
    convert.set_defaults(handler=convert_retail_command)

    dead = sub.add_parser(
        "dead-letters",
        help="list the event stream entries the workers gave up on, or requeue them",
    )
    dead.add_argument(
        "--count", type=positive_int, default=20, help="newest N dead letters (default 20)"
    )
    dead.add_argument(
        "--requeue",
        nargs="+",
        metavar="ID",
        help="put these dead letters back into their stream (ids as listed)",
    )
    dead.set_defaults(handler=dead_letters_command)

    journey = sub.add_parser(
        "journey-map", help="journey stage transition counts (from -> to) over a time window"
    )
    journey.add_argument(
        "--hours", type=positive_int, default=24, help="the last N hours (default 24)"
    )
    journey.set_defaults(handler=journey_map_command)
