"""The example third-party plugin (examples/plugins/journeygate-staff-picks), installed for real.

The package is built and installed with pip into a private directory once per module, then
found the way every installed plugin is found: through the ``journeygate`` entry-point group.
Each test puts that directory on ``sys.path`` and removes the imported module afterwards, so
no other test sees the plugin.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from journeygate.catalog import Catalog, Product, load_catalog

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "plugins" / "journeygate-staff-picks"
MODULE = "journeygate_staff_picks"
BADGE = "Hand-picked by Anna"
HOOKS = [
    "journeygate_candidates",
    "journeygate_postprocess_block",
    "journeygate_slot_strategies",
    "journeygate_startup",
]


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build and install the example package once for this module; returns the directory
    that holds it. A copy is built so the build leaves no ``build/`` or ``*.egg-info`` in the
    repository, and ``--no-index`` keeps pip off the network."""
    work = tmp_path_factory.mktemp("staff-picks")
    source = work / "journeygate-staff-picks"
    shutil.copytree(
        EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    site = work / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    return site


@pytest.fixture
def installed(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example package importable and visible to ``entry_points()`` for one test."""
    assert MODULE not in sys.modules
    monkeypatch.syspath_prepend(str(plugin_site))
    yield plugin_site
    for name in [n for n in sys.modules if n == MODULE or n.startswith(f"{MODULE}.")]:
        del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture(scope="module")
def catalog(catalog_path: Path) -> Catalog:
    return load_catalog(catalog_path)


@pytest.fixture(scope="module")
def picks(catalog: Catalog) -> list[str]:
    """The most popular product (so the popular block contains it) and two from further down
    the ranking (so it does not)."""
    return [catalog.popular[0].product_id, *(p.product_id for p in catalog.popular[40:42])]


def settings(picks: list[str], **extra: Any) -> dict[str, Any]:
    """``[plugin.staff_picks]`` with the picks, one unknown id, the badge and a budget."""
    return {"product_ids": [*picks, "NOPE-404"], "badge": BADGE, "budget_ms": 20} | extra


def sections(staff_picks: dict[str, Any]) -> dict[str, Any]:
    """The ``[plugin.*]`` sections of a test gateway: staff_picks as given, and every other
    installed plugin (first-party ones included) disabled, so these tests see the example
    alone next to the built-ins whatever else the environment has installed."""
    others = {ep.name for ep in entry_points(group="journeygate")} - {"staff_picks"}
    return {name: {"enabled": False} for name in sorted(others)} | {"staff_picks": staff_picks}


async def decide(client: Any, visitor_id: str, *slots: dict[str, Any], **body: Any) -> Any:
    response = await client.post(
        "/v1/decide", json={"visitor_id": visitor_id, "slots": list(slots)} | body
    )
    assert response.status == 200, await response.text()
    return await response.json()


PICKS_SLOT = {"id": "picks", "kind": "recommendations", "strategy": "staff_picks"}
POPULAR_SLOT = {"id": "popular", "kind": "recommendations", "strategy": "popular", "limit": 8}


def test_entry_point_is_found_after_install(installed: Path) -> None:
    found: dict[str, Any] = {}
    for ep in entry_points(group="journeygate"):
        found.setdefault(ep.name, ep)  # the first one on sys.path wins, as in the registry
    assert found["staff_picks"].value == "journeygate_staff_picks:StaffPicksPlugin"
    assert found["staff_picks"].dist is not None
    assert found["staff_picks"].dist.version == "0.1.0"
    plugin_class = found["staff_picks"].load()
    assert plugin_class.__module__ == MODULE
    assert Path(sys.modules[MODULE].__file__ or "").is_relative_to(installed)


async def test_staff_picks_slot_is_answered_by_the_plugin(
    installed: Path,
    gateway: Any,
    picks: list[str],
    visitor_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await gateway(load_entrypoints=True, plugin=sections(settings(picks)))
    assert "'NOPE-404' is not in the catalog" in caplog.text

    body = await decide(client, visitor_id, PICKS_SLOT, explain=True)
    (staff,) = body["blocks"]
    assert staff["source"] == "staff_picks"
    assert staff["strategy"] == "staff_picks"
    assert staff["personalized"] is True
    assert "fallback_reason" not in staff
    assert [item["product_id"] for item in staff["items"]] == picks
    assert {item["badge"] for item in staff["items"]} == {BADGE}
    assert {item["reason"] for item in staff["items"]} == {"staff pick"}
    scores = [item["score"] for item in staff["items"]]
    assert scores == sorted(scores, reverse=True)
    assert f'data-jg-product="{picks[0]}"' in staff["html"]

    calls = [
        (call["hook"], call["slot"], call["outcome"])
        for call in body["explain"]["calls"]
        if call.get("plugin") == "staff_picks"
    ]
    assert calls == [("candidates", "picks", "ok"), ("postprocess_block", "picks", "ok")]
    assert not [
        call
        for call in body["explain"]["calls"]
        if call.get("plugin") == "fallback" and call["hook"] == "candidates"
    ]


async def test_staff_picks_are_badged_in_other_blocks(
    installed: Path, gateway: Any, picks: list[str], visitor_id: str
) -> None:
    client = await gateway(load_entrypoints=True, plugin=sections(settings(picks)))

    body = await decide(client, visitor_id, POPULAR_SLOT, explain=True)
    (popular,) = body["blocks"]
    # The fallback answers the popular slot, but the staff pick in it is badged all the same.
    assert popular["source"] == "fallback"
    badges = {item["product_id"]: item.get("badge") for item in popular["items"]}
    assert badges[picks[0]] == BADGE
    assert [product_id for product_id, badge in badges.items() if badge] == [picks[0]]

    calls = [
        (call["hook"], call["plugin"], call["outcome"])
        for call in body["explain"]["calls"]
        if call["hook"] == "candidates"
    ]
    # staff_picks is asked first and answers None ("ok", but no products): the next plugin
    # answers, here the built-in fallback.
    assert calls[0] == ("candidates", "staff_picks", "ok")
    assert calls[-1] == ("candidates", "fallback", "ok")
    assert ("postprocess_block", "staff_picks", "ok") in [
        (call["hook"], call["plugin"], call["outcome"]) for call in body["explain"]["calls"]
    ]


async def test_cart_items_are_skipped_and_the_limit_applies(
    installed: Path, gateway: Any, picks: list[str], visitor_id: str
) -> None:
    client = await gateway(load_entrypoints=True, plugin=sections(settings(picks)))
    body = await decide(
        client,
        visitor_id,
        PICKS_SLOT | {"limit": 1},
        context={"cart": {"items": [{"product_id": picks[0]}]}},
    )
    (staff,) = body["blocks"]
    assert staff["source"] == "staff_picks"
    assert [item["product_id"] for item in staff["items"]] == [picks[1]]


async def test_admin_and_readiness_list_the_plugin(
    installed: Path, gateway: Any, picks: list[str], visitor_id: str
) -> None:
    client = await gateway(load_entrypoints=True, plugin=sections(settings(picks)))

    response = await client.get("/v1/admin/plugins", headers={"X-API-Key": "test-admin-key"})
    assert response.status == 200
    body = await response.json()
    plugins = {plugin["name"]: plugin for plugin in body["plugins"]}
    assert plugins["staff_picks"] == {
        "name": "staff_picks",
        "module": MODULE,
        "version": "0.1.0",
        "builtin": False,
        "hooks": HOOKS,
        "budget_ms": 20,
    }
    names = [plugin["name"] for plugin in body["plugins"]]
    assert names.index("staff_picks") < names.index("fallback")
    assert "staff_picks" in body["strategies"]
    assert body["failed"] == {}

    response = await client.get("/readyz")
    assert response.status == 200
    assert "staff_picks" in (await response.json())["plugins"]["started"]

    await decide(client, visitor_id, PICKS_SLOT)
    metrics = await (await client.get("/metrics")).text()
    assert 'plugin="staff_picks"' in metrics


async def test_bad_setting_fails_the_plugin_at_startup_not_the_gateway(
    installed: Path, gateway: Any, visitor_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = await gateway(load_entrypoints=True, plugin=sections({"product_ids": "not-a-list"}))
    assert "plugin staff_picks failed to start" in caplog.text

    response = await client.get("/readyz")
    assert response.status == 503
    ready = await response.json()
    assert ready["status"] == "unavailable"
    failure = ready["plugins"]["failed"]["staff_picks"]
    assert failure.startswith("ValueError: plugin.staff_picks.product_ids:")
    assert "got str" in failure
    assert "staff_picks" not in ready["plugins"]["started"]

    body = await decide(client, visitor_id, POPULAR_SLOT)
    (popular,) = body["blocks"]
    assert popular["source"] == "fallback"
    assert len(popular["items"]) == 8
    assert all("badge" not in item for item in popular["items"])

    response = await client.get("/v1/admin/plugins", headers={"X-API-Key": "test-admin-key"})
    admin = await response.json()
    assert "staff_picks" not in [plugin["name"] for plugin in admin["plugins"]]
    assert admin["failed"] == {"staff_picks": failure}
    # Its strategy stays known, so pages asking for it get the fallback rather than a 400.
    assert "staff_picks" in admin["strategies"]
    body = await decide(
        client, visitor_id, {"id": "picks", "kind": "recommendations", "strategy": "staff_picks"}
    )
    assert body["blocks"][0]["source"] == "fallback"


async def test_disabled_plugin_is_not_registered(
    installed: Path, gateway: Any, picks: list[str], visitor_id: str
) -> None:
    client = await gateway(load_entrypoints=True, plugin=sections(settings(picks, enabled=False)))
    response = await client.get("/v1/admin/plugins", headers={"X-API-Key": "test-admin-key"})
    admin = await response.json()
    assert "staff_picks" not in [plugin["name"] for plugin in admin["plugins"]]
    assert admin["failed"] == {}

    response = await client.post(
        "/v1/decide", json={"visitor_id": visitor_id, "slots": [PICKS_SLOT]}
    )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "unknown_strategy"


@pytest.mark.parametrize(
    ("settings_", "message"),
    [
        ({"product_ids": "not-a-list"}, "plugin.staff_picks.product_ids: expected a list"),
        ({"product_ids": [22423]}, "plugin.staff_picks.product_ids[0]: expected a product id"),
        ({"product_id": ["22423"]}, "plugin.staff_picks.product_id: unknown setting"),
        ({"product_ids": [], "badge": " "}, "plugin.staff_picks.badge: expected a non-empty"),
        ({"badge": 3}, "plugin.staff_picks.badge: expected a non-empty"),
    ],
)
def test_settings_are_checked(installed: Path, settings_: dict[str, Any], message: str) -> None:
    from journeygate_staff_picks import parse_settings

    catalog = Catalog([Product("22423", "Regency Cakestand", 12.75, "Baking & party")])
    with pytest.raises(ValueError) as error:
        parse_settings(settings_, catalog)
    assert str(error.value).startswith(message)


def test_settings_defaults_and_cleaning(installed: Path) -> None:
    from journeygate_staff_picks import DEFAULT_BADGE, parse_settings

    catalog = Catalog(
        [
            Product("22423", "Regency Cakestand", 12.75, "Baking & party"),
            Product("85123A", "White Hanging Heart T-Light Holder", 2.95, "Candles & lighting"),
        ]
    )
    assert parse_settings({}, catalog) == ((), DEFAULT_BADGE)
    assert parse_settings({"product_ids": ["85123A", "gone", "22423", "85123A"]}, catalog) == (
        ("85123A", "22423"),
        "Staff pick",
    )


def test_nothing_is_left_behind(plugin_site: Path) -> None:
    """Runs without the ``installed`` fixture: the plugin is gone again, whatever ran before."""
    assert MODULE not in sys.modules
    assert str(plugin_site) not in sys.path
    assert not [
        ep
        for ep in entry_points(group="journeygate")
        if ep.dist is not None and str(plugin_site) in str(ep.dist.locate_file(""))
    ]
