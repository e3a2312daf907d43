"""``[plugin.sentiment]`` settings, checked at startup with errors that name the key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from jg_sentiment.scoring import DEFAULT_THEMES, ScoringSettings

PLUGIN_NAME = "sentiment"
DEFAULT_ARTIFACTS = "var/models/sentiment"
EMBEDDING_CACHE = "var/cache/sentiment"


@dataclass(frozen=True, slots=True)
class SentimentSettings:
    """Where the model is, how feedback is scored, and how fast old sentiment fades."""

    artifacts: str = DEFAULT_ARTIFACTS
    half_life_days: float = 30.0
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    themes: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType(dict(DEFAULT_THEMES))
    )
    max_batch: int = 64
    # No batching window: a pass starts as soon as the model is free, and feedback arriving
    # during a pass shares the next one. A 2 ms window cost a lone feedback 1-2.5 ms and gave
    # the same batches at concurrency 4 (bench/sentiment.py, README).
    max_wait_ms: float = 0.0
    torch_threads: int = 1  # intra-op threads per forward pass, process-wide (see README)

    @property
    def half_life_s(self) -> float:
        return self.half_life_days * 86400.0

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> SentimentSettings:
        """Raises ``ValueError`` naming ``plugin.sentiment.KEY`` for a bad value."""
        known = {
            "artifacts",
            "half_life_days",
            "neutral_band",
            "mixed_ratio",
            "theme_threshold",
            "max_themes",
            "themes",
            "max_batch",
            "max_wait_ms",
            "torch_threads",
        }
        for key in settings:
            if key not in known:
                raise ValueError(f"plugin.{PLUGIN_NAME}.{key}: unknown setting")

        def number(key: str, default: float) -> float:
            value = settings.get(key, default)
            try:
                return float(value)  # environment overrides arrive as strings
            except (TypeError, ValueError):
                raise ValueError(f"plugin.{PLUGIN_NAME}.{key}: expected a number") from None

        artifacts = settings.get("artifacts", DEFAULT_ARTIFACTS)
        if not isinstance(artifacts, str) or not artifacts:
            raise ValueError(f"plugin.{PLUGIN_NAME}.artifacts: expected a path")
        half_life = number("half_life_days", 30.0)
        if half_life <= 0:
            raise ValueError(f"plugin.{PLUGIN_NAME}.half_life_days: must be positive")
        themes = settings.get("themes", DEFAULT_THEMES)
        if not isinstance(themes, Mapping) or not all(
            isinstance(name, str) and isinstance(text, str) and text
            for name, text in themes.items()
        ):
            raise ValueError(
                f'plugin.{PLUGIN_NAME}.themes: expected a table of theme = "description"'
            )
        max_batch = number("max_batch", 64)
        if max_batch < 1 or max_batch != int(max_batch):
            raise ValueError(f"plugin.{PLUGIN_NAME}.max_batch: expected a positive integer")
        max_wait_ms = number("max_wait_ms", 0.0)
        if max_wait_ms < 0:
            raise ValueError(f"plugin.{PLUGIN_NAME}.max_wait_ms: must not be negative")
        torch_threads = number("torch_threads", 1)
        if torch_threads < 1 or torch_threads != int(torch_threads):
            raise ValueError(f"plugin.{PLUGIN_NAME}.torch_threads: expected a positive integer")
        defaults = ScoringSettings()
        try:
            scoring = ScoringSettings(
                neutral_band=number("neutral_band", defaults.neutral_band),
                mixed_ratio=number("mixed_ratio", defaults.mixed_ratio),
                theme_threshold=number("theme_threshold", defaults.theme_threshold),
                max_themes=int(number("max_themes", defaults.max_themes)),
            )
        except ValueError as error:
            raise ValueError(f"plugin.{PLUGIN_NAME}.{error}") from None
        return cls(
            artifacts=artifacts,
            half_life_days=half_life,
            scoring=scoring,
            themes=MappingProxyType(dict(themes)),
            max_batch=int(max_batch),
            max_wait_ms=max_wait_ms,
            torch_threads=int(torch_threads),
        )
