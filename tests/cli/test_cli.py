"""The journeygate command, run as a real process."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from journeygate import hookimpl
from journeygate.cli import build_parser
from journeygate.config import PROJECT_ROOT, load_config
from journeygate.registry import build_plugin_manager
from testkit import free_port

JOURNEYGATE = [sys.executable, "-m", "journeygate.cli"]


def run(*args, env=None, timeout=60):
    return subprocess.run(
        [*JOURNEYGATE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
    )


def test_plugins_lists_builtin_plugins_and_their_hooks():
    result = run("plugins")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "candidates" in lines["fallback"] and "choose_offer" in lines["fallback"]
    assert "render_block" in lines["renderer"]
    assert "50ms" in lines["fallback"]


def test_bad_config_is_one_clean_line():
    result = run("plugins", env={"JOURNEYGATE_SERVER__PORT": "http"})
    assert result.returncode == 2
    assert result.stderr.strip() == "journeygate: server.port: expected an integer, got 'http'"
    assert "Traceback" not in result.stderr


def test_unknown_command_is_a_usage_error():
    result = run("fly")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_prepare_builds_a_catalog(tmp_path):
    out = tmp_path / "catalog.csv"
    result = run("prepare", env={"JOURNEYGATE_CATALOG__PATH": str(out)})
    assert result.returncode == 0, result.stderr
    assert out.exists() and "products" in result.stdout
    again = run("prepare", env={"JOURNEYGATE_CATALOG__PATH": str(out)})
    assert "catalog exists" in again.stdout


def get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_answers_decisions(catalog_path, redis_url, workers):
    port = free_port()
    env = {
        **os.environ,
        "JOURNEYGATE_CATALOG__PATH": str(catalog_path),
        "REDIS_URL": redis_url,
    }
    process = subprocess.Popen(
        [*JOURNEYGATE, "serve", "--port", str(port), "--workers", str(workers)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = get(f"http://127.0.0.1:{port}/readyz")
                break
            except OSError:
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.2)
        assert status == 200
        assert json.loads(body)["store"]["backend"] == "redis"
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/decide",
            data=json.dumps(
                {"visitor_id": "v-cli", "slots": [{"id": "a", "kind": "recommendations"}]}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        for _ in range(4):
            with urllib.request.urlopen(request, timeout=5) as response:
                assert len(json.loads(response.read())["blocks"][0]["items"]) == 8
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert f"{workers} worker" in output


class Greeter:
    """A plugin that adds a subcommand through the register_commands hook."""

    @hookimpl
    def journeygate_register_commands(self, subparsers):
        greet = subparsers.add_parser("greet", help="say hello")
        greet.add_argument("name")
        greet.set_defaults(handler=lambda args, config: print(f"hello {args.name}") or 7)


def test_plugins_can_register_commands(capsys):
    pm = build_plugin_manager(load_config(environ={}), extra_plugins=(("greeter", Greeter()),))
    parser = build_parser(pm)
    args = parser.parse_args(["greet", "world"])
    assert args.handler(args, None) == 7
    assert capsys.readouterr().out == "hello world\n"
    assert "greet" in parser.format_help()
