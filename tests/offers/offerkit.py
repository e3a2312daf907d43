"""Helpers shared by the offer tests (a module, not a conftest: a second conftest.py would
shadow the root one): a gateway with the offers plugin and a catalog of the test's own, and
decide calls whose answers are checked against /openapi.json."""

from __future__ import annotations

import asyncio
import importlib
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import jsonschema
from aiohttp.test_utils import TestClient

from jg_offers.plugin import OffersPlugin
from journeygate import appkeys

# The event tests' helpers (a module of tests/events).
EVENT_TESTS = str(Path(__file__).resolve().parents[1] / "events")
if EVENT_TESTS not in sys.path:
    sys.path.append(EVENT_TESTS)
eventkit = importlib.import_module("eventkit")

DEFAULT_OFFER = "free-delivery"  # [fallback.default_offer] id of config/journeygate.toml


class Clock:
    """A clock the test moves (frequency windows, schedules); starts at the real time."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


async def start(
    gateway: Any,
    tmp_path: Path,
    catalog: str | None,
    backend: str = "memory",
    redis_url: str = "",
    clock: Clock | None = None,
    **settings: Any,
) -> TestClient:
    """A gateway with the offers plugin; ``catalog`` is TOML text (None: the shipped one)."""
    if catalog is not None:
        path = tmp_path / "offers.toml"
        path.write_text(textwrap.dedent(catalog), encoding="utf-8")
        settings["catalog"] = str(path)
    plugin = OffersPlugin(clock or Clock())
    return await gateway(
        extra_plugins=[("offers", plugin)],
        plugin={"offers": settings},
        **eventkit.overrides(backend, redis_url),
    )


def plugin_of(client: TestClient) -> OffersPlugin:
    app = client.app
    assert app is not None
    plugin = app[appkeys.PLUGIN_MANAGER].get_plugin("offers")
    assert isinstance(plugin, OffersPlugin)
    return plugin


async def set_profile(client: TestClient, visitor: str, **fields: Any) -> None:
    """Profile fields as other plugins (intent, personas, sentiment, triggers) write them."""
    assert client.app is not None
    await client.app[appkeys.STORE].update_profile(visitor, fields)


_validators: dict[int, jsonschema.Draft202012Validator] = {}


async def _validator(client: TestClient) -> jsonschema.Draft202012Validator:
    if id(client) not in _validators:
        document = await (await client.get("/openapi.json")).json()
        content = document["paths"]["/v1/decide"]["post"]["responses"]["200"]["content"]
        schema = {**content["application/json"]["schema"], "components": document["components"]}
        _validators[id(client)] = jsonschema.Draft202012Validator(schema)
    return _validators[id(client)]


async def decide(
    client: TestClient,
    visitor: str,
    context: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    explain: bool = False,
) -> dict[str, Any]:
    """One offer slot; returns its block (with ``_body`` the whole answer)."""
    slot: dict[str, Any] = {"id": "hero", "kind": "offer"}
    if params:
        slot["params"] = params
    body = {
        "visitor_id": visitor,
        "session_id": "s-1",
        "context": context or {"page": {"type": "home"}},
        "slots": [slot],
        "explain": explain,
    }
    response = await client.post("/v1/decide", json=body)
    assert response.status == 200, await response.text()
    answer = await response.json()
    (await _validator(client)).validate(answer)
    (block,) = answer["blocks"]
    return {**block, "_body": answer}


async def wait_for_shows(client: TestClient, visitor: str, offer_id: str, count: int) -> None:
    """Shows are recorded after the response: wait until the profile holds ``count``."""
    assert client.app is not None
    store = client.app[appkeys.STORE]
    deadline = time.monotonic() + 5
    while True:
        profile = await store.get_profile(visitor) or {}
        if len(profile.get("offer_shows", {}).get(offer_id, [])) == count:
            return
        assert time.monotonic() < deadline, f"shows of {offer_id}: {profile}"
        await asyncio.sleep(0.01)
