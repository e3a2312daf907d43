"""Keeps the plugin contract honest: every hook documented, typed, and exercised by a test."""

import inspect
from pathlib import Path

import pytest

from journeygate import hookspecs

HOOKS = sorted(
    name
    for name, value in vars(hookspecs).items()
    if name.startswith("journeygate_") and callable(value)
)
TESTS = Path(__file__).resolve().parents[1]


def test_there_are_hooks():
    assert "journeygate_candidates" in HOOKS and len(HOOKS) >= 9


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_fully_documented(name):
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert "When:" in doc, f"{name}: say when it is called"
    assert ":returns:" in doc, f"{name}: say what it returns"
    assert any(
        phrase in doc for phrase in ("All implementations", "All results", "first", "First")
    ), f"{name}: say whether all results are collected or the first wins"
    assert "async" in doc.lower() or "Synchronous" in doc, f"{name}: say whether it may be async"
    signature = inspect.signature(getattr(hookspecs, name))
    for parameter in signature.parameters:
        assert f":param {parameter}:" in doc, f"{name}: document parameter {parameter}"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_typed(name):
    signature = inspect.signature(getattr(hookspecs, name))
    assert signature.return_annotation is not inspect.Signature.empty
    for parameter in signature.parameters.values():
        assert parameter.annotation is not inspect.Parameter.empty, f"{name}({parameter.name})"


def test_no_hook_uses_firstresult():
    # firstresult does not work with async implementations; the pipeline resolves "first wins".
    from journeygate import registry
    from journeygate.config import load_config

    pm = registry.build_plugin_manager(load_config(environ={}), load_entrypoints=False)
    for name in HOOKS:
        assert not getattr(pm.hook, name).spec.opts.get("firstresult"), name


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_test_implementing_it(name):
    sources = [
        p.read_text(encoding="utf-8")
        for p in TESTS.rglob("test_*.py")
        if p.name != "test_hookspecs.py"
    ]
    assert any(f"def {name}(" in source for source in sources), f"no test implements {name}"
