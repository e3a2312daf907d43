"""Real journeys: three Online Retail customers' invoices, converted into events
(`journeygate convert-retail`'s converter), replayed through the gateway shifted to end now
(`journeygate replay`'s client), applied by a worker: recent orders get their post-purchase
follow-ups, older ones (beyond max_event_age_s) nothing, and no completed checkout counts as
an abandoned cart. `journeygate triggers log` then shows what fired."""

from __future__ import annotations

import asyncio
from collections import Counter

import pandas as pd
from triggerkit import WRITE_KEY

from jg_triggers.plugin import TriggersPlugin
from journeygate.cli import build_parser
from journeygate.config import PROJECT_ROOT
from journeygate.events.replay import replay
from journeygate.events.retail_events import retail_events, select_lines, write_events
from journeygate.events.schema import parse_time
from journeygate.registry import build_plugin_manager
from journeygate.retail_data import read_online_retail
from testkit import settle

pytest_plugins = ["triggerfixtures"]  # url, receiver, stack

SAMPLE = PROJECT_ROOT / "data" / "sample" / "online_retail_sample.csv.gz"
DAY = 86400.0
MAX_AGE_DAYS = 30


def customers_with_old_and_recent_orders(count: int) -> pd.DataFrame:
    """The lines of the ``count`` lowest customer ids with an invoice in the sample's last 20
    days and one more than 90 days before its end."""
    frame = select_lines(read_online_retail(SAMPLE))
    sales = frame[~frame["InvoiceNo"].str.startswith(("C", "A"))]
    invoices = sales.groupby("InvoiceNo").agg(c=("CustomerID", "first"), t=("InvoiceDate", "max"))
    end = invoices["t"].max()
    recent = set(invoices[invoices["t"] > end - pd.Timedelta(days=20)]["c"])
    old = set(invoices[invoices["t"] < end - pd.Timedelta(days=90)]["c"])
    chosen = sorted(recent & old)[:count]
    return frame[frame["CustomerID"].isin(chosen)]


async def test_replayed_customers_get_post_purchase_follow_ups(stack, receiver, tmp_path, capsys):
    events = retail_events(customers_with_old_and_recent_orders(3))
    first = min(str(event["timestamp"]) for event in events)
    users = sorted({event["user_id"] for event in events})
    consents = [
        {
            "event": "consent",
            "user_id": user,
            "timestamp": first,
            "message_id": f"consent:{user}",
            "properties": {"consents": {"marketing_email": True}},
        }
        for user in users
    ]
    path = tmp_path / "retail.jsonl"
    write_events([*consents, *events], path)
    end = max(parse_time(event["timestamp"], "t") or 0.0 for event in events)
    orders = [
        (event["user_id"], event["properties"]["order_id"], parse_time(event["timestamp"], "t"))
        for event in events
        if event["event"] == "order"
    ]
    recent = {(user, order) for user, order, at in orders if at > end - MAX_AGE_DAYS * DAY}
    assert len(users) == 3 and 2 <= len(recent) < len(orders)
    deployment = await stack(
        {
            "post_purchase_1d": {"type": "post_purchase", "delay_s": 0.3, "marketing": False},
            "post_purchase_7d": {"type": "post_purchase", "delay_s": 0.6},
            "cart_abandonment": {"delay_s": 0.3},
        },
        workers=1,
        max_event_age_s=MAX_AGE_DAYS * DAY,
    )
    stats = await replay(
        path, url=str(deployment.client.make_url("/")), write_key=WRITE_KEY, shift_to_now=True
    )
    assert stats.accepted == len(events) + len(users) and not stats.rejected
    await receiver.wait_for(2 * len(recent), timeout_s=10)
    await asyncio.sleep(0.7)  # long enough for a cart abandonment or a second follow-up
    fired = Counter(
        (p["visitor_id"], p["data"]["order_id"], p["trigger"]) for p in receiver.payloads()
    )
    expected = {
        (user, order, trigger)
        for user, order in recent
        for trigger in ("post_purchase_1d", "post_purchase_7d")
    }
    assert fired == Counter(expected)  # each once, recent orders only, no abandoned carts
    await settle(lambda: _logged(deployment, len(expected)))

    # `journeygate triggers log --count 3`, parsed and run as the command line does
    parser = build_parser(
        build_plugin_manager(
            deployment.config,
            load_entrypoints=False,
            extra_plugins=(("triggers", TriggersPlugin()),),
        )
    )
    args = parser.parse_args(["triggers", "log", "--count", "3"])
    assert await asyncio.to_thread(args.handler, args, deployment.config) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == ["at", "trigger", "visitor", "outcome", "detail", "occurrence"]
    assert len(lines) == 3
    assert all(line.split()[2].startswith("post_purchase_") for line in lines)
    assert all(line.split()[4] == "sent" for line in lines)


async def _logged(deployment, count: int) -> bool:
    return len(await deployment.log()) >= count
