"""``journeygate webhooks log | dead-letters | redeliver`` against a real Redis."""

from __future__ import annotations

import asyncio

import pytest
from hookkit import message

from journeygate.cli import main
from journeygate.config import load_config
from journeygate.store import open_store
from journeygate.webhooks.model import AttemptResult, webhook_queue

CONFIG = """
[plugins]
load_entrypoints = false

[webhooks.endpoints.crm]
url = "http://127.0.0.1:9/crm"
secret = "s"
"""


@pytest.fixture
def cli(tmp_path, monkeypatch, redis_url, clean_webhooks):
    path = tmp_path / "journeygate.toml"
    path.write_text(CONFIG, encoding="utf-8")
    monkeypatch.setenv("REDIS_URL", redis_url)

    def run(*args: str) -> int:
        return main(["--config", str(path), "--log-level", "WARNING", "webhooks", *args])

    run.config = load_config(path)  # type: ignore[attr-defined]
    return run


def with_queue(config, action):
    async def run():
        store = open_store(config.store, "redis", config.events)
        try:
            return await action(webhook_queue(store, config))
        finally:
            await store.close()

    return asyncio.run(run())


async def deliver_one_and_give_up_on_one(queue):
    await queue.enqueue([message("a", "v1"), message("b")])
    ok, bad = await queue.claim("cli-test", 2)
    await queue.complete("cli-test", ok, AttemptResult("delivered", 200, "", 0.012))
    await queue.complete("cli-test", bad, AttemptResult("dead_letter", 422, "HTTP 422: no", 0.02))
    return bad.delivery.id


def test_log_dead_letters_and_redeliver(cli, capsys):
    dead_id = with_queue(cli.config, deliver_one_and_give_up_on_one)
    assert cli("log") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[2] for line in lines] == ["dead_letter", "delivered"]
    assert "status=422" in lines[0] and lines[0].endswith("HTTP 422: no")
    assert cli("log", "--count", "1") == 0
    assert len(capsys.readouterr().out.splitlines()) == 1

    assert cli("dead-letters") == 0
    (line,) = capsys.readouterr().out.splitlines()
    entry_id, _, endpoint, event_type, delivery_id, attempts, status, error = line.split("\t")
    assert (endpoint, delivery_id, attempts, status) == ("crm", dead_id, "attempts=1", "status=422")
    assert (event_type, error) == ("trigger.cart_abandonment", "HTTP 422: no")

    assert cli("redeliver", entry_id, "1-1") == 1  # one found, one not
    assert capsys.readouterr().out.splitlines() == [f"{entry_id}\tredelivered", "1-1\tnot found"]
    assert cli("dead-letters") == 0
    assert capsys.readouterr().out == ""
    (claim,) = with_queue(cli.config, lambda queue: queue.claim("cli-test", 5))
    assert (claim.delivery.id, claim.delivery.attempt) == (dead_id, 1)


def test_redeliver_all(cli, capsys):
    with_queue(cli.config, deliver_one_and_give_up_on_one)
    assert cli("redeliver", "--all") == 0
    assert capsys.readouterr().out == "1 dead letter(s) back in the outbox\n"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((), "give dead letter ids or --all"),
        (("1-1", "--all"), "give dead letter ids or --all"),
        (("latest",), "not a dead letter id: 'latest'"),
    ],
)
def test_redeliver_usage_errors(cli, capsys, args, error):
    assert cli("redeliver", *args) == 2
    assert error in capsys.readouterr().err


def test_without_redis_the_commands_say_so(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)
    path = tmp_path / "journeygate.toml"
    path.write_text("[plugins]\nload_entrypoints = false\n", encoding="utf-8")
    assert main(["--config", str(path), "webhooks", "log"]) == 2
    assert "set REDIS_URL" in capsys.readouterr().err


def test_bad_count_is_a_usage_error(cli, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli("log", "--count", "0")
    assert exit_.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err
