"""Triggers observe the worker's batches before they are acknowledged, so no event is lost
to a worker that dies or a trigger store that fails, and a batch observed twice fires
nothing twice: a worker SIGKILLed with a batch applied but not acknowledged (before and after
the triggers plugin saw it), a trigger store refusing one batch, and the engine failing at
each of its steps and then given the batch again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import redis
import redis.asyncio as aioredis
from triggerkit import SECRET, UNREACHABLE, consent, ev, send, write_triggers

from jg_triggers.engine import TriggerEngine
from jg_triggers.redis_store import RedisTriggerStore
from jg_triggers.scheduler import Scheduler
from jg_triggers.settings import load_settings
from journeygate.config import PROJECT_ROOT
from journeygate.events.schema import Event
from journeygate.store import StoreUnavailable, keys, open_store
from journeygate.webhooks import webhook_outbox
from testkit import settle

pytest_plugins = ["triggerfixtures"]  # url, receiver, stack

HERE = Path(__file__).resolve().parent
# Entries a worker read and did not acknowledge are reclaimed after 300 ms.
RECLAIM = {"events": {"claim_idle_ms": 300, "claim_interval_ms": 100}}


def trigger_state(url: str, visitor: str) -> dict[str, object]:
    client = redis.Redis.from_url(url)
    try:
        raw = client.hgetall(keys.trigger_state(visitor))
    finally:
        client.close()
    return {name.decode(): orjson.loads(value) for name, value in raw.items() if name != b"version"}


def unacknowledged(url: str, group: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return sum(client.xpending(keys.event_stream(shard), group)["pending"] for shard in (0, 1))
    finally:
        client.close()


def consumer_reading(url: str, group: str, consumer: str) -> bool:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        names = {c["name"] for c in client.xinfo_consumers(keys.event_stream(0), group)}
        return consumer in names
    except redis.ResponseError:  # no group yet
        return False
    finally:
        client.close()


def worker_env(deployment, receiver_url: str, trigger_file: Path) -> dict[str, str]:
    """The deployment's config, for a worker process of its own."""
    config = deployment.config
    env = {
        **os.environ,
        "JOURNEYGATE_STORE__REDIS_URL": config.store.redis_url,
        "JOURNEYGATE_CATALOG__PATH": config.catalog.path,
        "JOURNEYGATE_PLUGINS__LOAD_ENTRYPOINTS": "false",
        "JOURNEYGATE_PLUGIN__TRIGGERS__FILE": str(trigger_file),
        "JOURNEYGATE_WEBHOOKS__ENDPOINTS__CRM__URL": receiver_url,
        "JOURNEYGATE_WEBHOOKS__ENDPOINTS__CRM__SECRET": SECRET,
    }
    for name in ("stream_shards", "idle_sleep_ms", "claim_idle_ms", "claim_interval_ms"):
        env[f"JOURNEYGATE_EVENTS__{name.upper()}"] = str(getattr(config.events, name))
    env.pop("REDIS_URL", None)
    return env


async def wait_until(condition, timeout_s: float = 20.0) -> None:
    async def holds() -> bool:
        return await asyncio.to_thread(condition)

    await settle(holds, timeout_s)


@pytest.mark.parametrize("stalled", ["before", "after"])
async def test_a_worker_killed_before_acknowledging_a_batch_loses_no_abandoned_cart(
    stack, receiver, url, tmp_path, stalled
):
    """``before``: the worker died before the triggers plugin saw the batch (what used to be
    lost); ``after``: it died after, and the redelivered batch is observed a second time."""
    deployment = await stack({"cart_abandonment": {"delay_s": 2.0}}, workers=0, sections=RECLAIM)
    group = deployment.config.events.consumer_group
    marker = tmp_path / "stalled"
    doomed = subprocess.Popen(
        [sys.executable, str(HERE / "killed_worker.py"), str(marker), "doomed", stalled],
        cwd=PROJECT_ROOT,
        env=worker_env(deployment, receiver.url(), tmp_path / "triggers.toml"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_until(lambda: consumer_reading(url, group, "doomed"))
        await send(
            deployment.client,
            consent("shopper"),
            ev("Product Added", "shopper", product_id="P1", quantity=2),
        )
        await wait_until(marker.exists)  # applied, observed up to the stall, not acknowledged
        assert unacknowledged(url, group) > 0
        assert bool(trigger_state(url, "shopper")) == (stalled == "after")
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
    deployment.start_worker("survivor")  # reclaims the batch and observes it (again)
    await wait_until(lambda: unacknowledged(url, group) == 0)
    assert trigger_state(url, "shopper")["cart"]["qty"] == 2  # not counted twice
    await receiver.wait_for(1, timeout_s=10)
    await asyncio.sleep(0.5)  # a second webhook would have arrived by now
    (payload,) = receiver.payloads()
    assert payload["trigger"] == "cart_abandonment" and payload["visitor_id"] == "shopper"
    assert payload["data"]["products"] == ["P1"] and payload["data"]["quantity"] == 2
    assert await deployment.outcomes() == [("cart_abandonment", "shopper", "sent")]


async def test_a_batch_the_trigger_store_refused_comes_back_and_fires_once(
    stack, receiver, url, caplog
):
    deployment = await stack({"cart_abandonment": {"delay_s": 0.5}}, workers=1, sections=RECLAIM)
    plugin = deployment.plugins["worker-0"]
    await settle(lambda: _started(plugin))
    assert isinstance(plugin.store, RedisTriggerStore)
    healthy, plugin.store.pipelines.client = (
        plugin.store.pipelines.client,
        aioredis.Redis.from_url(UNREACHABLE.replace("http", "redis").replace("/crm", "/0")),
    )
    try:
        await send(
            deployment.client,
            consent("unlucky"),
            ev("Product Added", "unlucky", product_id="P1", quantity=2),
        )

        async def refused() -> bool:
            # the worker logs the batch's failure after the plugin's warning: wait for both
            return "failed (delivery 1 of 3): not observed: triggers:" in caplog.text

        await settle(refused)
    finally:
        down, plugin.store.pipelines.client = plugin.store.pipelines.client, healthy
        await down.aclose()
    assert trigger_state(url, "unlucky") == {}  # nothing of it reached the trigger store
    assert "the trigger store is unavailable" in caplog.text
    await receiver.wait_for(1, timeout_s=20)
    await asyncio.sleep(0.4)
    (payload,) = receiver.payloads()
    assert payload["visitor_id"] == "unlucky" and payload["data"]["quantity"] == 2
    assert await deployment.outcomes() == [("cart_abandonment", "unlucky", "sent")]
    assert unacknowledged(url, deployment.config.events.consumer_group) == 0


class Unreachable(RedisTriggerStore):
    """The Redis trigger store, unreachable for one call: the ``call``-th of ``method``."""

    def __init__(self, url: str, shards: int, method: str, call: int) -> None:
        super().__init__(url, shards, 1000, 2.0)
        self.method, self.call, self.calls = method, call, 0

    def _reach(self, method: str) -> None:
        if method == self.method:
            self.calls += 1
            if self.calls == self.call:
                raise StoreUnavailable("redis: ConnectionError: unreachable")

    async def load_states(self, visitor_ids):
        self._reach("load_states")
        return await super().load_states(visitor_ids)

    async def update_timers(self, timers, cancel, ttl_s):
        self._reach("update_timers")
        return await super().update_timers(timers, cancel, ttl_s)

    async def save_states(self, writes, ttl_s):
        self._reach("save_states")
        return await super().save_states(writes, ttl_s)

    async def guard(self, check):
        self._reach("guard")
        return await super().guard(check)

    async def log(self, records, maxlen, ttl_s):
        self._reach("log")
        return await super().log(records, maxlen, ttl_s)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def event(kind: str, message_id: str, t: float, **fields: object) -> Event:
    return Event.from_internal(
        {"id": message_id, "n": kind, "k": kind, "v": "v1", "t": t, "r": t, "c": "web", "x": fields}
        | ({"p": {"results": 0}} if kind == "search" else {}),
        "v1",
    )


@pytest.mark.parametrize(
    ("method", "call", "committed"),
    [
        ("load_states", 1, False),
        ("update_timers", 1, False),  # the timers and the backup of the search's fire
        ("save_states", 1, False),
        ("guard", 1, True),  # the search's fire, after the state was written
        ("log", 1, True),  # ... after its webhook was queued
        ("update_timers", 2, True),  # cancelling the backup once the search fired
    ],
)
async def test_a_pass_cut_short_anywhere_and_run_again_fires_each_occurrence_once(
    make_config, url, tmp_path, method, call, committed
):
    path = write_triggers(
        tmp_path / "triggers.toml",
        {
            "cart_abandonment": {"delay_s": 60, "marketing": False},
            "search_no_results": {"marketing": False},
        },
    )
    settings = load_settings(path)
    config = make_config(
        store={"redis_url": url, "timeout_ms": 2000},  # a busy machine: no flaky timeouts
        webhooks={"endpoints": {"crm": {"url": UNREACHABLE, "secret": SECRET}}},
    )
    profiles = open_store(config.store, "redis", config.events)
    outbox = webhook_outbox(profiles, config)
    assert outbox is not None
    store = Unreachable(url, settings.scheduler.shards, method, call)
    clock = Clock()
    engine = TriggerEngine(settings, store, profiles, outbox, 1800.0, clock)
    batch = [
        event("cart_add", "m1", clock.now - 2, pid="P1", qty=2),
        event("search", "m2", clock.now - 1, q="purple teapot"),
    ]
    try:
        try:
            await engine.observe(batch)
            assert committed
        except StoreUnavailable:
            assert not committed
        await engine.observe(batch)  # delivered again: not acknowledged, or its worker died
        clock.now += 120  # past the cart's delay and every lease
        scheduler = Scheduler(store, engine, settings.scheduler, clock)
        while await scheduler.run_once():
            pass
        (state,) = await store.load_states(["v1"])
        assert state.fields["cart"]["qty"] == 2
        client = redis.Redis.from_url(url)
        queued = [orjson.loads(f[b"d"]) for _, f in client.xrange(keys.WEBHOOK_OUTBOX)]
        timers = sum(client.zcard(key) for key in client.scan_iter(match="jg:{triggers/*}:due"))
        client.close()
        assert sorted(d["type"] for d in queued) == [
            "trigger.cart_abandonment",
            "trigger.search_no_results",
        ]
        cart = next(d["data"] for d in queued if d["type"] == "trigger.cart_abandonment")
        assert cart["data"]["quantity"] == 2
        assert timers == 0  # every timer fired or was cancelled, the backups included
        outcomes = {record.outcome for record in await store.read_log(10)}
        assert outcomes <= {"sent", "duplicate"}
    finally:
        await store.close()
        await profiles.close()


async def _started(plugin) -> bool:
    return plugin.store is not None and plugin.scheduler is not None
