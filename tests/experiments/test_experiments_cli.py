"""``journeygate experiments report``, run as a real process: from Redis, and from a running
gateway (``--url``) when the results live in its process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import redis.asyncio as aioredis
from xpkit import free_port, fresh_redis_url, write_experiments

from journeygate.config import PROJECT_ROOT, ExperimentsConfig
from journeygate.experiments.storage import Exposure, Outcome, RedisExperimentStore

JOURNEYGATE = [sys.executable, "-m", "journeygate.cli"]


def run(*args, env):
    return subprocess.run(
        [*JOURNEYGATE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
        env={**os.environ, "JOURNEYGATE_PLUGINS__LOAD_ENTRYPOINTS": "false", **env},
    )


async def record(url):
    client = aioredis.Redis.from_url(url, decode_responses=True)
    store = RedisExperimentStore(client, ExperimentsConfig())
    now = time.time()
    arms = ["default", "ten-off", "holdout"]
    await store.record_exposures(
        [Exposure("hero-test", arms[i % 3], f"c{i}", f"d{i}", "hero", 0.4, now) for i in range(30)]
    )
    await store.attribute(
        [
            Outcome("order", f"c{i}", now, revenue=10.0 + i, order_id=f"o{i}")
            for i in range(0, 30, 4)
        ]
        + [Outcome("click", f"c{i}", now, f"d{i}", "hero") for i in range(0, 30, 2)],
        {"hero-test": "click"},
    )
    await client.aclose()


def test_report_from_redis(redis_url, tmp_path):
    url = fresh_redis_url(redis_url)
    asyncio.run(record(url))
    env = {"REDIS_URL": url, "JOURNEYGATE_EXPERIMENTS__FILE": write_experiments(tmp_path)}
    result = run("experiments", "report", "hero-test", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("experiment hero-test on slot hero: fixed policy, running")
    rows = {line.split()[0]: line.split() for line in lines[2:5]}
    assert rows["default"][2:4] == ["10", "3"]  # visitors, conversions
    assert rows["default"][-1] == "(control)"
    assert "sample ratio: chi-square" in result.stdout
    as_json = json.loads(run("experiments", "report", "hero-test", "--json", env=env).stdout)
    assert [arm["exposures"] for arm in as_json["arms"]] == [10, 10, 10]
    assert [arm["clicks"] for arm in as_json["arms"]] == [5, 5, 5]
    # the whole report: every experiment of the file
    assert run("experiments", "report", env=env).stdout.startswith("experiment hero-test")
    missing = run("experiments", "report", "nope", env=env)
    assert missing.returncode == 2
    assert missing.stderr.startswith("journeygate: no experiment 'nope'")


def test_report_from_a_running_gateway(catalog_path, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "JOURNEYGATE_CATALOG__PATH": str(catalog_path),
        "JOURNEYGATE_PLUGINS__LOAD_ENTRYPOINTS": "false",
        "JOURNEYGATE_STORE__BACKEND": "memory",
        "JOURNEYGATE_SERVER__API_KEYS": "cli-key",
        "JOURNEYGATE_EXPERIMENTS__FILE": write_experiments(tmp_path),
        "REDIS_URL": "",
    }
    without_url = run("experiments", "report", "hero-test", env=env)
    assert without_url.returncode == 2 and "pass --url" in without_url.stderr
    server = subprocess.Popen(
        [*JOURNEYGATE, "serve", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/readyz", timeout=1)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.2)
        for index in range(12):
            body = json.dumps(
                {"visitor_id": f"cli-{index}", "slots": [{"id": "hero", "kind": "offer"}]}
            ).encode()
            request = urllib.request.Request(
                f"{base}/v1/decide", body, {"Content-Type": "application/json"}
            )
            urllib.request.urlopen(request, timeout=5)
        time.sleep(0.3)  # exposures are written every flush_interval_ms
        result = run(
            "experiments", "report", "hero-test", "--url", base, "--api-key", "cli-key", env=env
        )
        assert result.returncode == 0, result.stderr
        visitors = sum(int(line.split()[2]) for line in result.stdout.splitlines()[2:5])
        assert visitors == 12
        denied = run("experiments", "report", "hero-test", "--url", base, env=env)
        assert denied.returncode == 2 and "401" in denied.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)
