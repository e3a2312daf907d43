"""Builds the plugin manager: built-in plugins first, then installed ones via entry points.

Built-in behaviour (fallback answers, HTML rendering) is written as ordinary plugins and
registered exactly like a third-party plugin, only with ``trylast`` implementations so that
any installed plugin wins.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType

import pluggy

from journeygate import hookspecs
from journeygate.config import AppConfig, ConfigError
from journeygate.hookspecs import PROJECT_NAME

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = PROJECT_NAME

DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("fallback", "journeygate.builtins.fallback:FallbackPlugin"),
    ("renderer", "journeygate.builtins.renderer:RendererPlugin"),
)


@dataclass(frozen=True)
class PluginInfo:
    """What ``journeygate plugins`` and ``/v1/admin/plugins`` show about one plugin."""

    name: str
    module: str
    version: str | None
    builtin: bool
    hooks: tuple[str, ...]


def instantiate(target: object) -> object:
    """A plugin may be a module, an object, or a class (one instance per gateway process)."""
    return target() if isinstance(target, type) else target


def _load(reference: str) -> object:
    module_name, _, attribute = reference.partition(":")
    module: ModuleType = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


def _installed_plugins(
    config: AppConfig, failures: dict[str, str]
) -> dict[str, tuple[object, str | None]]:
    """Import the enabled installed plugins; one that fails to import is recorded in
    ``failures`` (and reported by ``/readyz``) instead of stopping the gateway."""
    found: dict[str, tuple[object, str | None]] = {}
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name in found or entry_point.name in failures:
            continue
        version = entry_point.dist.version if entry_point.dist else None
        if not config.plugin_config(entry_point.name).enabled:
            found[entry_point.name] = (None, version)
            continue
        try:
            found[entry_point.name] = (entry_point.load(), version)
        except Exception as exc:
            log.exception("plugin %s could not be imported; it is disabled", entry_point.name)
            failures[entry_point.name] = f"{exc.__class__.__name__}: {exc}"
    return found


def _wrappers(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """Hook implementations declared as pluggy wrappers, which the pipeline cannot run."""
    return [
        impl.function.__name__
        for caller in pm.get_hookcallers(plugin) or ()
        for impl in caller.get_hookimpls()
        if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper)
    ]


def build_plugin_manager(
    config: AppConfig,
    load_entrypoints: bool | None = None,
    extra_plugins: tuple[tuple[str, object], ...] = (),
) -> pluggy.PluginManager:
    """Create the plugin manager for one gateway process.

    Plugins are called in the order given by ``[plugins] order``, then ``extra_plugins``
    (used by tests and embedding code) in the order given, then the remaining installed ones
    by name. A plugin with ``[plugin.NAME] enabled = false`` is not imported. An installed
    plugin that fails to import, or declares pluggy hook wrappers, is left out and recorded in
    ``pm.journeygate_load_failures`` (``/readyz`` reports it); it never stops the gateway.
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    versions: dict[str, str | None] = {}
    failures: dict[str, str] = {}
    for name, reference in DEFAULT_PLUGINS:
        if not config.plugin_config(name).enabled:
            raise ConfigError(f"plugin.{name}.enabled: the built-in {name} cannot be disabled")
        pm.register(instantiate(_load(reference)), name=name)

    installed: dict[str, tuple[object, str | None]] = {}
    if config.plugins.load_entrypoints if load_entrypoints is None else load_entrypoints:
        installed.update(_installed_plugins(config, failures))
    installed.update({name: (plugin, None) for name, plugin in extra_plugins})

    unknown = [name for name in config.plugins.order if name not in installed]
    if unknown:
        raise ConfigError(f"plugins.order: unknown plugin {unknown[0]!r}")
    known = set(installed) | set(failures) | {name for name, _ in DEFAULT_PLUGINS}
    for name in config.plugin:
        if name not in known:
            raise ConfigError(f"plugin.{name}: no such plugin is installed")

    preferred = list(config.plugins.order) + [
        name for name, _ in extra_plugins if name not in config.plugins.order
    ]
    ordered = preferred + sorted(set(installed) - set(preferred))
    # pluggy calls the most recently registered plugin first.
    for name in reversed(ordered):
        plugin, version = installed[name]
        if not config.plugin_config(name).enabled:
            log.info("plugin %s is disabled by config", name)
            continue
        instance = instantiate(plugin)
        pm.register(instance, name=name)
        wrappers = _wrappers(pm, instance)
        if wrappers:
            pm.unregister(name=name)
            failures[name] = f"hook wrappers are not supported: {', '.join(wrappers)}"
            log.error("plugin %s is disabled: %s", name, failures[name])
            continue
        versions[name] = version
    pm.check_pending()
    pm.journeygate_versions = versions  # type: ignore[attr-defined]
    pm.journeygate_load_failures = failures  # type: ignore[attr-defined]
    return pm


def plugin_infos(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Describe every registered plugin, in call order."""
    builtin_names = {name for name, _ in DEFAULT_PLUGINS}
    versions: dict[str, str | None] = getattr(pm, "journeygate_versions", {})
    infos = []
    for name, plugin in reversed(pm.list_name_plugin()):
        hooks = tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()))
        infos.append(
            PluginInfo(
                name=name,
                module=getattr(plugin, "__name__", None) or type(plugin).__module__,
                version=versions.get(name),
                builtin=name in builtin_names,
                hooks=hooks,
            )
        )
    return infos
