from pathlib import Path

import pytest

from journeygate.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "journeygate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_bundled_config_loads_with_documented_defaults():
    config = load_config(environ={})
    assert config.server.port == 8080
    assert config.store_backend == "memory"
    assert config.store.session_ttl_s == 1800
    assert config.fallback.default_offer.id == "free-delivery"


def test_redis_url_from_environment_selects_redis_store():
    config = load_config(environ={"REDIS_URL": "redis://127.0.0.1:6390/0"})
    assert config.store_backend == "redis"
    assert config.store.redis_url == "redis://127.0.0.1:6390/0"


def test_environment_overrides_are_typed():
    config = load_config(
        environ={
            "JOURNEYGATE_SERVER__PORT": "9001",
            "JOURNEYGATE_SERVER__CORS_ORIGINS": "https://a.example, https://b.example",
            "JOURNEYGATE_DECIDE__RECORD_PAGE_VIEWS": "false",
        }
    )
    assert config.server.port == 9001
    assert config.server.cors_origins == ("https://a.example", "https://b.example")
    assert config.decide.record_page_views is False


def test_config_objects_are_frozen():
    config = load_config(environ={})
    with pytest.raises(AttributeError):
        config.server.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[server]\nprot = 80\n", "server.prot"),
        ("[server]\nport = 'eighty'\n", "server.port"),
        ("[decide]\nmax_slots = -1\n", "decide.max_slots"),
        ("[store]\nbackend = 'mongo'\n", "store.backend"),
        ("[store]\nbackend = 'redis'\n", "store.redis_url"),
        ("[server]\nport = 70000\n", "server.port"),
        ("[serverz]\n", "serverz"),
        ("[plugin.fallback]\nbudget_ms = 'fast'\n", "plugin.fallback.budget_ms"),
        ("[plugins]\ndefault_batch_budget_ms = 60000\n", "plugins.default_batch_budget_ms"),
        ("[plugin.fallback]\nbatch_budget_ms = 0\n", "plugin.fallback.batch_budget_ms"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text), environ={})
    assert str(error.value).startswith(key)


def test_bad_environment_value_names_the_key():
    with pytest.raises(ConfigError, match=r"^server\.workers"):
        load_config(environ={"JOURNEYGATE_SERVER__WORKERS": "many"})


def test_invalid_toml_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[server\n"), environ={})


def test_plugin_section_separates_reserved_keys_from_settings(tmp_path):
    path = write(tmp_path, "[plugin.recs]\nbudget_ms = 20\nenabled = false\nmodel = 'x.npz'\n")
    config = load_config(path, environ={})
    section = config.plugin_config("recs")
    assert section.budget_ms == 20
    assert section.enabled is False
    assert dict(section.settings) == {"model": "x.npz"}
    assert config.budget_s("recs") == pytest.approx(0.020)
    assert config.budget_s("other") == pytest.approx(config.plugins.default_budget_ms / 1000)


def test_a_batch_observer_is_done_with_a_batch_before_another_worker_may_claim_it(tmp_path):
    config = load_config(environ={})
    assert config.batch_budget_s("any") == config.events.claim_idle_ms / 2000  # unset
    text = "[events]\nclaim_idle_ms = 5000\n[plugins]\ndefault_batch_budget_ms = 2000\n"
    text += "[plugin.fallback]\nbatch_budget_ms = 4000\n"
    config = load_config(write(tmp_path, text), environ={})
    assert config.batch_budget_s("fallback") == pytest.approx(4.0)
    assert config.batch_budget_s("other") == pytest.approx(2.0)
    with pytest.raises(ConfigError) as error:
        load_config(environ={"JOURNEYGATE_PLUGIN__FALLBACK__BATCH_BUDGET_MS": "60000"})
    assert str(error.value) == (
        "plugin.fallback.batch_budget_ms: must be shorter than events.claim_idle_ms (60000 ms), "
        "or another worker claims the batch"
    )
