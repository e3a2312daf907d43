"""Setting triggers up: `journeygate triggers list`, the log command without Redis, and a
trigger file that names an endpoint journeygate.toml does not configure (the plugin does not
start, /readyz says why)."""

from __future__ import annotations

import tomllib

import pytest
from triggerkit import SECRET, write_triggers

from jg_triggers.plugin import TriggersPlugin
from jg_triggers.settings import PluginSettings, TriggerConfigError
from journeygate.cli import build_parser
from journeygate.config import PROJECT_ROOT
from journeygate.registry import build_plugin_manager

pytest_plugins = ["triggerfixtures"]  # url, receiver, stack


def run(config, *argv):
    pm = build_plugin_manager(
        config, load_entrypoints=False, extra_plugins=(("triggers", TriggersPlugin()),)
    )
    args = build_parser(pm).parse_args(list(argv))
    return args.handler(args, config)


def test_list_checks_the_file_and_shows_every_trigger(make_config, capsys):
    shipped = str(PROJECT_ROOT / "config" / "triggers.toml")
    config = make_config(plugin={"triggers": {"file": shipped}})
    assert run(config, "triggers", "list") == 0
    head, columns, *rows, quiet = capsys.readouterr().out.splitlines()
    assert head.endswith("10 of 10 triggers enabled; inactive: no [webhooks.endpoints] configured")
    assert columns.split() == ["trigger", "type", "when", "action", "endpoint", "guardrails"]
    by_name = {row.split()[0]: row for row in rows}
    assert "cart, no checkout within 30 min" in by_name["cart_abandonment"]
    assert "crm (missing)" in by_name["inactivity"] and "cap 1 per 2 d" in by_name["inactivity"]
    assert "7 d after an order" in by_name["post_purchase_7d"]
    assert quiet == "quiet hours: 21:00-08:00 Europe/London"
    endpoints = {"crm": {"url": "https://crm.example/hooks", "secret": SECRET}}
    config = make_config(plugin={"triggers": {"file": shipped}}, webhooks={"endpoints": endpoints})
    assert run(config, "triggers", "list") == 0
    out = capsys.readouterr().out
    assert "inactive" not in out and "(missing)" not in out


def test_a_bad_file_names_the_key_and_the_log_needs_redis(make_config, tmp_path, capsys):
    path = tmp_path / "triggers.toml"
    path.write_text('[triggers.inactivity]\nendpoint = "crm"\nmin_events = "many"\n')
    config = make_config(plugin={"triggers": {"file": str(path)}})
    with pytest.raises(TriggerConfigError) as raised:
        run(config, "triggers", "list")
    assert str(raised.value) == (
        "triggers.toml: triggers.inactivity.min_events: expected an integer from 1 to "
        "1000000, got 'many'"
    )
    assert run(make_config(store={"backend": "memory"}), "triggers", "log") == 2
    assert "the trigger log is kept in Redis" in capsys.readouterr().out


async def test_a_trigger_sent_to_an_unknown_endpoint_stops_the_plugin(gateway, tmp_path):
    path = write_triggers(tmp_path / "triggers.toml", {"cart_abandonment": {"endpoint": "email"}})
    client = await gateway(
        extra_plugins=[("triggers", TriggersPlugin())],
        store={"backend": "memory"},
        webhooks={"endpoints": {"crm": {"url": "https://crm.example/hooks", "secret": SECRET}}},
        plugin={"triggers": {"file": str(path)}},
    )
    response = await client.get("/readyz")
    assert response.status == 503
    failed = (await response.json())["plugins"]["failed"]
    assert failed["triggers"] == (
        "TriggerConfigError: triggers.toml: triggers.cart_abandonment.endpoint: no "
        "[webhooks.endpoints.email] is configured (configured: crm)"
    )


def test_the_commented_config_section_shows_the_defaults():
    text = (PROJECT_ROOT / "config" / "journeygate.toml").read_text(encoding="utf-8")
    block = text[text.index("# [plugin.triggers]") :].split("\n\n", 1)[0].splitlines()
    section = tomllib.loads("\n".join(line[2:] for line in block if line.startswith("# ")))
    assert PluginSettings.read(section["plugin"]["triggers"]) == PluginSettings()
