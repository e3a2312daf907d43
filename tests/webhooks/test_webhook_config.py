"""``[webhooks]`` and ``[webhooks.endpoints.NAME]``: bad values stop startup naming the key;
secrets come from the environment; nothing is configured by default."""

from __future__ import annotations

import pytest

from journeygate.config import ConfigError, load_config

ENDPOINT = '[webhooks.endpoints.crm]\nurl = "https://crm.example/hooks"\nsecret = "s"\n'


def write(tmp_path, text: str):
    path = tmp_path / "journeygate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_bundled_config_has_no_endpoint():
    config = load_config(environ={})
    assert dict(config.webhooks.endpoints) == {}


def test_an_endpoint_with_its_own_timeout(tmp_path):
    config = load_config(write(tmp_path, ENDPOINT + "timeout_ms = 900\n"), environ={})
    assert config.webhooks.endpoints["crm"].url == "https://crm.example/hooks"
    assert config.webhooks.endpoint_timeout_ms("crm") == 900


def test_secrets_come_from_the_environment(tmp_path):
    path = write(tmp_path, '[webhooks.endpoints.crm]\nurl = "https://crm.example/hooks"\n')
    environ = {"JOURNEYGATE_WEBHOOKS__ENDPOINTS__CRM__SECRET": "from-env"}
    assert load_config(path, environ=environ).webhooks.endpoints["crm"].secret == "from-env"
    environ = {
        "JOURNEYGATE_WEBHOOKS__ENDPOINTS__EMAIL__URL": "http://mail.internal/jg",
        "JOURNEYGATE_WEBHOOKS__ENDPOINTS__EMAIL__SECRET": "s2",
        "JOURNEYGATE_WEBHOOKS__MAX_ATTEMPTS": "4",
    }
    config = load_config(
        path, environ=environ | {"JOURNEYGATE_WEBHOOKS__ENDPOINTS__CRM__SECRET": "x"}
    )
    assert config.webhooks.endpoints["email"].url == "http://mail.internal/jg"
    assert config.webhooks.max_attempts == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[webhooks.endpoints.crm]\nsecret = "s"\n',
            "webhooks.endpoints.crm.url: expected an http",
        ),
        (
            '[webhooks.endpoints.crm]\nurl = "ftp://crm.example"\nsecret = "s"\n',
            "webhooks.endpoints.crm.url: expected an http",
        ),
        (
            '[webhooks.endpoints.crm]\nurl = "https://"\nsecret = "s"\n',
            "webhooks.endpoints.crm.url",
        ),
        (
            '[webhooks.endpoints.crm]\nurl = "https://crm.example"\n',
            "webhooks.endpoints.crm.secret",
        ),
        (ENDPOINT + "timeout_ms = 0\n", "webhooks.endpoints.crm.timeout_ms: must be at least 1"),
        (ENDPOINT + "retries = 3\n", "webhooks.endpoints.crm.retries: unknown config key"),
        (
            '[webhooks.endpoints.CRM]\nurl = "https://crm.example"\nsecret = "s"\n',
            "webhooks.endpoints.CRM: endpoint names are lower-case",
        ),
        ("[webhooks]\nmax_attempts = 0\n", "webhooks.max_attempts: must be at least 1"),
        ("[webhooks]\nconcurrency = 'many'\n", "webhooks.concurrency: expected an integer"),
        ("[webhooks]\nbackoff_base_ms = -5\n", "webhooks.backoff_base_ms: must not be negative"),
        (
            "[webhooks]\nbackoff_base_ms = 2000\nbackoff_max_ms = 1000\n",
            "webhooks.backoff_max_ms: smaller than webhooks.backoff_base_ms",
        ),
        ("[webhooks]\ntimeout_ms = 60000\n", "webhooks.lease_ms: must be longer than"),
        (
            ENDPOINT + "timeout_ms = 70000\n[webhooks]\nlease_ms = 80000\n",
            "webhooks.claim_idle_ms: must be longer than the longest endpoint timeout (70000 ms)",
        ),
        ("[webhooks]\noutbox_maxlen = 0\n", "webhooks.outbox_maxlen: must be at least 1"),
        ("[webhooks]\nendpoints = 'crm'\n", "webhooks.endpoints: expected a table"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text), environ={})
    assert str(error.value).startswith(message)


def test_an_environment_secret_without_url_names_the_key():
    environ = {"JOURNEYGATE_WEBHOOKS__ENDPOINTS__CRM__SECRET": "s"}
    with pytest.raises(ConfigError, match=r"^webhooks\.endpoints\.crm\.url"):
        load_config(environ=environ)
