"""Journey stage transitions: recorded by the intent plugin off the request path, counted by
``GET /v1/journey/transitions`` and ``journeygate journey-map``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from jg_intent.plugin import IntentPlugin
from journeygate import appkeys
from journeygate.config import PROJECT_ROOT

ADMIN = {"X-API-Key": "test-admin-key"}
CART = {"items": [{"product_id": "22423", "quantity": 1, "price": 12.75}]}


async def decide(client, visitor, context):
    body = {
        "visitor_id": visitor,
        "session_id": "s-1",
        "context": context,
        "slots": [{"id": "offer", "kind": "offer"}],
    }
    response = await client.post("/v1/decide", json=body)
    assert response.status == 200, await response.text()
    return (await response.json())["visitor"]["stage"]


async def stored_stage(client, visitor, expected):
    """The observer runs after the answer was sent: wait for it to have recorded."""
    store = client.app[appkeys.STORE]
    for _ in range(100):
        profile = await store.get_profile(visitor) or {}
        if profile.get("stage") == expected:
            return profile
        await asyncio.sleep(0.02)
    raise AssertionError(f"stage {expected} never recorded: {profile}")


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_stage_transitions_are_recorded_and_mapped(gateway, redis_url, backend, visitor_id):
    # (a generous store timeout: on a busy machine the first call may take over 50 ms, and a
    # decision made without the store records nothing)
    store = {"backend": "memory"}
    if backend == "redis":
        store = {"redis_url": redis_url, "timeout_ms": 1000}
    client = await gateway(extra_plugins=[("intent", IntentPlugin())], store=store)
    since = time.time()
    assert await decide(client, visitor_id, {"page": {"type": "home"}}) == "awareness"
    first = await stored_stage(client, visitor_id, "awareness")
    assert first["stage_since"] >= since - 0.001
    assert await decide(client, visitor_id, {"page": {"type": "home"}}) == "awareness"
    assert await decide(client, visitor_id, {"page": {"type": "cart"}, "cart": CART}) == "decision"
    await stored_stage(client, visitor_id, "decision")
    # a one-off anonymous decision (a block include without identity) records nothing
    assert (await client.get("/v1/blocks/offer", params={"kind": "offer"})).status == 200
    await asyncio.sleep(0.1)

    response = await client.get("/v1/journey/transitions", params={"since": since}, headers=ADMIN)
    assert response.status == 200
    body = await response.json()
    assert body["transitions"] == [
        {"from": None, "to": "awareness", "count": 1},
        {"from": "awareness", "to": "decision", "count": 1},
    ]
    assert body["total"] == 2 and body["truncated"] is False


@pytest.mark.parametrize(
    ("params", "field"),
    [({"since": "yesterday"}, "since"), ({"until": "-5"}, "until"), ({"since": "9e99"}, "since")],
)
async def test_journey_window_errors_name_the_parameter(gateway, params, field):
    client = await gateway(store={"backend": "memory"})
    response = await client.get("/v1/journey/transitions", params=params, headers=ADMIN)
    assert response.status == 400
    assert (await response.json())["error"]["field"] == field
    assert (await client.get("/v1/journey/transitions")).status == 401


async def test_the_journey_map_command_prints_the_counts(gateway, redis_url, visitor_id):
    client = await gateway(
        extra_plugins=[("intent", IntentPlugin())], store={"redis_url": redis_url}
    )
    await decide(client, visitor_id, {"page": {"type": "home"}})
    await stored_stage(client, visitor_id, "awareness")
    env = {**os.environ, "REDIS_URL": redis_url, "JOURNEYGATE_PLUGINS__LOAD_ENTRYPOINTS": "false"}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "journeygate.cli", "journey-map", "--hours", "1"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["from", "to", "count"]
    new_to_awareness = [
        line.split() for line in lines if line.split()[:2] == ["(new)", "awareness"]
    ]
    assert new_to_awareness and int(new_to_awareness[0][2]) >= 1
    assert lines[-1].split()[0] == "total"
