"""Plugin discovery: a broken or disabled installed plugin never stops the gateway."""

import textwrap

import pytest

from journeygate import hookimpl
from journeygate.config import ConfigError
from journeygate.registry import build_plugin_manager


def install_fake_distribution(root, name, module_source):
    """A real installed distribution (dist-info with an entry point) in ``root``."""
    (root / f"{name}.py").write_text(textwrap.dedent(module_source), encoding="utf-8")
    info = root / f"{name}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[journeygate]\n{name} = {name}\n")


def test_plugin_that_fails_to_import_is_recorded_not_fatal(tmp_path, monkeypatch, make_config):
    install_fake_distribution(tmp_path, "jg_broken_import", "raise ImportError('numpy too old')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pm = build_plugin_manager(make_config(), load_entrypoints=True)
    assert not pm.has_plugin("jg_broken_import")
    assert pm.journeygate_load_failures["jg_broken_import"] == "ImportError: numpy too old"


def test_disabled_plugin_is_not_even_imported(tmp_path, monkeypatch, make_config):
    install_fake_distribution(tmp_path, "jg_disabled", "raise ImportError('must not run')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pm = build_plugin_manager(
        make_config(plugin={"jg_disabled": {"enabled": False}}), load_entrypoints=True
    )
    assert not pm.has_plugin("jg_disabled")
    assert "jg_disabled" not in pm.journeygate_load_failures


def test_installed_plugin_is_registered_with_its_version(tmp_path, monkeypatch, make_config):
    install_fake_distribution(
        tmp_path,
        "jg_hello",
        """
        from journeygate import hookimpl

        @hookimpl
        def journeygate_slot_strategies():
            return ["hello"]
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    pm = build_plugin_manager(make_config(), load_entrypoints=True)
    assert pm.has_plugin("jg_hello")
    assert pm.journeygate_versions["jg_hello"] == "1.2.3"


class Wrapper:
    @hookimpl(wrapper=True)
    def journeygate_candidates(self):
        result = yield
        return result


def test_hook_wrappers_are_rejected(make_config):
    pm = build_plugin_manager(make_config(), extra_plugins=(("wrapping", Wrapper()),))
    assert not pm.has_plugin("wrapping")
    assert "hook wrappers are not supported" in pm.journeygate_load_failures["wrapping"]


@pytest.mark.parametrize("name", ["fallback", "renderer"])
def test_builtins_cannot_be_disabled(make_config, name):
    with pytest.raises(ConfigError, match=rf"^plugin\.{name}\.enabled"):
        build_plugin_manager(make_config(plugin={name: {"enabled": False}}))


def test_unknown_plugin_in_order_or_sections_is_a_config_error(make_config):
    with pytest.raises(ConfigError, match=r"^plugins\.order"):
        build_plugin_manager(make_config(plugins={"order": ["ghost"]}))
    with pytest.raises(ConfigError, match=r"^plugin\.ghost"):
        build_plugin_manager(make_config(plugin={"ghost": {"budget_ms": 5}}))
