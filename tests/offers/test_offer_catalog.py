"""The catalog is checked at startup: a mistake disables the plugin and names the key."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap

import pytest
from offerkit import DEFAULT_OFFER, decide, start

from jg_offers.catalog import OfferCatalogError, OffersSettings, load_catalog
from journeygate.config import PROJECT_ROOT

GOOD = """
[[offers]]
id = "a"
kind = "discount"
title = "A"
"""


async def test_a_bad_catalog_fails_the_plugin_at_startup_naming_the_key(gateway, tmp_path):
    catalog = GOOD + '\n[[offers]]\nid = "b"\nkind = "bundle"\ntitle = "B"\n'
    catalog += '[offers.eligibility]\nsentiment_min = "high"\n'
    client = await start(gateway, tmp_path, catalog)
    response = await client.get("/readyz")
    assert response.status == 503
    failed = (await response.json())["plugins"]["failed"]
    assert failed["offers"] == (
        f"OfferCatalogError: {tmp_path / 'offers.toml'}: "
        "offers[1] (b).eligibility.sentiment_min: expected a number, got 'high'"
    )
    # decisions go on: the offer slot is answered by the fallback
    assert (await decide(client, "v1"))["offer"]["id"] == DEFAULT_OFFER


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('kind = "coupon"', "offers[1] (b).kind: 'coupon' is not one of discount, "),
        ('colour = "red"', "offers[1] (b).colour: unknown key"),
        ("priority = 1.5", "offers[1] (b).priority: expected an integer, got 1.5"),
        ('cta_url = "javascript:alert(1)"', "offers[1] (b).cta_url: expected a path (/...) or"),
        ("[offers.eligibility]\nsentiment_min = 2", "sentiment_min: must be between -1 and 1"),
        (
            "[offers.eligibility]\ncart_value_min = 50\ncart_value_max = 20",
            "offers[1] (b).eligibility.cart_value_max: below cart_value_min (50)",
        ),
        (
            '[offers.eligibility]\nchannels = ["fax"]',
            "offers[1] (b).eligibility.channels[0]: 'fax' is not one of web, app, email",
        ),
        (
            '[offers.eligibility]\nconsents = ["newsletter"]',
            "offers[1] (b).eligibility.consents[0]: 'newsletter' is not one of marketing_email",
        ),
        (
            "[offers.eligibility]\ntrigger_window_minutes = 5",
            "offers[1] (b).eligibility.trigger_window_minutes: set without triggers",
        ),
        (
            "[offers.eligibility]\nstage = 'decision'",
            "offers[1] (b).eligibility.stage: unknown key",
        ),
        (
            "[offers.schedule]\nstart = 2026-05-01\nend = 2026-04-01",
            "offers[1] (b).schedule.end: must be after start",
        ),
        ("[offers.schedule]\nhours = [9, 25]", "offers[1] (b).schedule.hours: expected [from, to]"),
        ("[offers.caps]\nbudget = 0", "offers[1] (b).caps.budget: must be at least 1, got 0"),
        ("[offers.caps]\nwindow_hours = 2", "offers[1] (b).caps.window_hours: set without per_"),
    ],
)
def test_catalog_mistakes_name_the_key(tmp_path, entry, message):
    path = tmp_path / "offers.toml"
    second = f'[[offers]]\nid = "b"\ntitle = "B"\n{entry}\n'
    if "kind" not in entry:
        second = second.replace('title = "B"', 'title = "B"\nkind = "bundle"')
    path.write_text(GOOD + "\n" + second, encoding="utf-8")
    with pytest.raises(OfferCatalogError) as error:
        load_catalog(path, dt.UTC)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD + GOOD, "offers[1] (a).id: duplicate offer id 'a'"),
        ('[[offers]]\nid = "a b"\nkind = "content"\ntitle = "A"', "offers[0] (a b).id: expected"),
        ('[[offers]]\nid = "a"\nkind = "content"', "offers[0] (a).title: required"),
        ("[upsell_eligibility]\nsentiment = 1\n" + GOOD, "upsell_eligibility.sentiment: unknown"),
        ("[offer]\n", "offers: expected [[offers]] entries"),
    ],
)
def test_catalog_structure_mistakes_name_the_key(tmp_path, text, message):
    path = tmp_path / "offers.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(OfferCatalogError) as error:
        load_catalog(path, dt.UTC)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"when_none_eligible": "blank"}, "plugin.offers.when_none_eligible: expected default or"),
        ({"timezone": "Mars/Olympus"}, "plugin.offers.timezone: unknown time zone 'Mars/Olympus'"),
        ({"budget_refresh_s": 0}, "plugin.offers.budget_refresh_s: must be between"),
        ({"catalogue": "x.toml"}, "plugin.offers.catalogue: unknown key"),
    ],
)
def test_settings_mistakes_name_the_key(settings, message):
    with pytest.raises(OfferCatalogError) as error:
        OffersSettings.read(settings)
    assert str(error.value).startswith(message)


def test_the_shipped_catalog_is_valid():
    catalog = load_catalog(PROJECT_ROOT / "config" / "offers.toml", dt.UTC)
    kinds = {offer.kind for offer in catalog.offers}
    assert {"discount", "free_shipping", "bundle", "vip_preview"} <= kinds
    assert {"service_recovery", "referral"} <= kinds
    assert catalog.upsell_eligibility.sentiment_min == -0.3


def test_offers_command_checks_and_lists_the_catalog(tmp_path):
    command = [sys.executable, "-m", "journeygate.cli", "offers"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("config/offers.toml: 7 offers, valid")
    ids = [line.split()[0] for line in lines[3:]]
    assert ids[0] == "service-recovery" and ids[-1] == "refer-a-friend"  # by priority
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD + "priority = 'high'\n", encoding="utf-8")
    result = subprocess.run(
        [*command, "--catalog", str(bad)], capture_output=True, text=True, cwd=PROJECT_ROOT
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"journeygate: {bad}: offers[0] (a).priority: expected an integer, got 'high'"
    )
