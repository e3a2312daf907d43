"""``journeygate convert-retail`` and ``journeygate replay``: the real Online Retail sample as
events, replayed through a real gateway and worker into profiles."""

import time
from datetime import datetime

import orjson
import pytest
from aiohttp import web
from eventkit import ADMIN, WRITE_KEY, apply_pending, event, fresh_redis_url, overrides

from journeygate.cli import main
from journeygate.config import EventsConfig
from journeygate.events.ingest import parse_batch
from journeygate.events.replay import ReplayError, replay
from journeygate.events.retail_events import retail_events, select_lines
from journeygate.events.schema import MAX_QUANTITY, parse_native
from journeygate.retail_data import read_online_retail
from testkit import SAMPLE

CUSTOMERS = 10  # the 10 lowest customer ids of the sample: 30 invoices, 2 cancellations
# Aggregates measured from the reading's clock: two reads a moment apart may differ in them.
CLOCK_RELATIVE = ("days_since_last_order", "days_since_last_seen", "purchase_frequency_per_year")


@pytest.fixture(scope="module")
def frame():
    return read_online_retail(SAMPLE)


def expected(frame, customer):
    """Orders, revenue, refunds and refunded amount of one customer, straight from the data."""
    lines = frame.loc[frame["CustomerID"] == customer]
    value = lines["Quantity"] * lines["UnitPrice"]
    cancelled = lines["InvoiceNo"].str.startswith("C")
    sold = ~cancelled & (lines["Quantity"] > 0) & (lines["UnitPrice"] > 0)
    per_order = value[sold].groupby(lines.loc[sold, "InvoiceNo"]).sum().round(2)
    per_refund = (-value[cancelled]).groupby(lines.loc[cancelled, "InvoiceNo"]).sum().round(2)
    return {
        "orders": len(per_order),
        "revenue": round(float(per_order.sum()), 2),
        "refunds": len(per_refund),
        "refunded": round(float(per_refund.sum()), 2),
    }


def test_converted_events_follow_the_data_and_pass_validation(frame):
    # 16446 bought 80,995 of one item: above the schema's quantity cap
    chosen = [12365, 12384, 12415, 16446]
    events = retail_events(frame.loc[frame["CustomerID"].isin(chosen)])
    batch = parse_batch(events, "events", parse_native, EventsConfig())
    assert batch.rejected == []
    assert len({e["message_id"] for e in events}) == len(events)
    assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)
    for customer in chosen:
        mine = [e for e in events if e["user_id"] == str(customer)]
        orders = [e for e in mine if e["event"] == "order"]
        refunds = [e for e in mine if e["event"] == "order_refund"]
        want = expected(frame, customer)
        assert len(orders) == want["orders"] and len(refunds) == want["refunds"]
        revenue = sum(e["properties"]["revenue"] for e in orders)
        assert revenue == pytest.approx(want["revenue"], abs=0.01)
        refunded = sum(e["properties"]["revenue"] for e in refunds)
        assert refunded == pytest.approx(want["refunded"], abs=0.01)
    # the browsing before an order ends just before it, at its real invoice time
    invoice = frame.loc[frame["CustomerID"] == 12365, "InvoiceNo"].iloc[0]
    steps = [e for e in events if e["message_id"].startswith(f"retail:{invoice}:")]
    assert [e["event"] for e in steps[-4:]] == [
        "product_view",
        "cart_add",
        "checkout_start",
        "order",
    ]
    at = frame.loc[frame["InvoiceNo"] == invoice, "InvoiceDate"].iloc[0]
    assert steps[-1]["timestamp"] == at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    big = [e for e in events if e["event"] == "order" and e["user_id"] == "16446"]
    assert max(i["quantity"] for e in big for i in e["properties"]["products"]) == MAX_QUANTITY


@pytest.fixture
async def redis_gateway(gateway, redis_url):
    return await gateway(**overrides("redis", fresh_redis_url(redis_url)))


async def profile(client, customer):
    response = await client.get(f"/v1/profiles/{customer}", headers=ADMIN)
    assert response.status == 200
    return await response.json()


async def test_replayed_sample_builds_the_customers_profiles_once(
    redis_gateway, frame, tmp_path, capsys
):
    client = redis_gateway
    out = tmp_path / "retail.jsonl"
    assert main(["convert-retail", str(SAMPLE), str(out), "--customers", str(CUSTOMERS)]) == 0
    assert f"of {CUSTOMERS} customers" in capsys.readouterr().out
    lines = out.read_bytes().splitlines()
    url = str(client.make_url(""))

    stats = await replay(out, url, write_key=WRITE_KEY, batch_size=100)
    assert (stats.read, stats.sent, stats.accepted) == (len(lines), len(lines), len(lines))
    assert not stats.rejected and stats.retries == 0
    assert await apply_pending(client) == len(lines)

    customers = sorted(select_lines(frame, CUSTOMERS)["CustomerID"].unique())
    before = {}
    for customer in customers:
        body = await profile(client, customer)
        aggregates = body["aggregates"]
        want = expected(frame, customer)
        assert {name: aggregates[name] for name in want} == pytest.approx(want, abs=0.01)
        assert aggregates["cart_adds"] == aggregates["product_views"] > 0
        before[customer] = body
    assert sum(before[c]["aggregates"]["refunds"] for c in customers) == 2

    again = await replay(out, url, write_key=WRITE_KEY, batch_size=37)
    assert again.accepted == len(lines)
    assert await apply_pending(client) == 0  # every message id was applied already
    for customer in customers:
        after = (await profile(client, customer))["aggregates"]
        earlier = before[customer]["aggregates"]
        assert {k: v for k, v in after.items() if k not in CLOCK_RELATIVE} == {
            k: v for k, v in earlier.items() if k not in CLOCK_RELATIVE
        }
        assert [after[k] for k in CLOCK_RELATIVE] == pytest.approx(
            [earlier[k] for k in CLOCK_RELATIVE], abs=0.01
        )


async def test_speed_keeps_the_recorded_pacing_and_shift_moves_it_to_now(
    gateway, redis_url, tmp_path
):
    client = await gateway(**overrides("memory", redis_url))
    start = 1_300_000_000.0  # 2011
    recording = [event("page_view", "v-replay", start + 10 * i, path=f"/p{i}") for i in range(3)]
    path = tmp_path / "journey.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in recording) + b"not json\n")
    url = str(client.make_url(""))

    stats = await replay(path, url, write_key=WRITE_KEY, speed=20, shift_to_now=True)
    # 20 s of recording at 20x: about a second, one request per event as each falls due
    assert 0.9 <= stats.duration_s < 3
    assert (stats.read, stats.sent, stats.accepted) == (4, 3, 3)
    assert stats.rejected == {"invalid_json": 1}
    assert "line 4" in stats.summary()
    body = await profile(client, "v-replay")
    last_seen = datetime.fromisoformat(body["last_seen"]).timestamp()
    assert abs(last_seen - time.time()) < 30
    assert body["sessions"][0]["duration_s"] == 20.0  # the gaps are kept

    recording[0]["timestamp"] = time.time() + 3600  # too far ahead: rejected, with its line
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in recording))
    stats = await replay(path, url, write_key=WRITE_KEY)
    assert stats.rejected == {"timestamp_in_future": 1}
    assert stats.examples["timestamp_in_future"][0].startswith("line 1: ")

    with pytest.raises(ReplayError, match=r"answered 401: .*--write-key"):
        await replay(path, url, write_key="wrong")


async def test_a_503_is_retried_until_the_gateway_takes_the_batch(aiohttp_server, tmp_path):
    answers = []

    async def events(request):
        body = await request.json()
        answers.append(len(body["events"]))
        if len(answers) <= 2:  # Redis is down: nothing accepted
            return web.json_response({"error": {}}, status=503, headers={"Retry-After": "0"})
        accepted = [{"index": i, "message_id": str(i)} for i in range(len(body["events"]))]
        return web.json_response({"accepted": accepted, "rejected": []})

    app = web.Application()
    app.router.add_post("/v1/events", events)
    server = await aiohttp_server(app)
    path = tmp_path / "one.jsonl"
    path.write_bytes(orjson.dumps(event("page_view", "v1", path="/")) + b"\n")

    stats = await replay(path, str(server.make_url("")), write_key="k")
    assert answers == [1, 1, 1] and stats.retries == 2 and stats.accepted == 1
    answers.clear()
    with pytest.raises(ReplayError, match="gave up after 1 retries: HTTP 503"):
        await replay(path, str(server.make_url("")), write_key="k", max_retries=1)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "missing.jsonl"), "--write-key", "k"]) == 2
    assert main(["convert-retail", str(SAMPLE.parent / "README.md"), str(tmp_path / "o")]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", "x.jsonl", "--speed", "fast"])
    assert exit_info.value.code == 2
    errors = capsys.readouterr().err
    assert "Traceback" not in errors
    assert "missing.jsonl" in errors and "README.md" in errors and "--speed" in errors
