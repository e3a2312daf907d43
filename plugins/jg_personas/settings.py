"""``[plugin.personas]`` settings, checked at startup (errors name the key)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jg_personas.segments import DEFAULT_SEGMENTS, Segment, parse_segments

PLUGIN_NAME = "personas"
DEFAULT_ARTIFACTS = "var/models/personas"
WHERE = f"plugin.{PLUGIN_NAME}"


@dataclass(frozen=True)
class PersonaSettings:
    artifacts: str = DEFAULT_ARTIFACTS  # where `journeygate segment` publishes the model
    segments: tuple[Segment, ...] = parse_segments(DEFAULT_SEGMENTS, f"{WHERE}.segments")

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> PersonaSettings:
        unknown = sorted(set(settings) - {"artifacts", "segments"})
        if unknown:
            raise ValueError(f"{WHERE}.{unknown[0]}: unknown setting; expected artifacts, segments")
        artifacts = settings.get("artifacts", DEFAULT_ARTIFACTS)
        if not isinstance(artifacts, str) or not artifacts:
            raise ValueError(f"{WHERE}.artifacts: expected a directory path, got {artifacts!r}")
        segments = parse_segments(settings.get("segments", DEFAULT_SEGMENTS), f"{WHERE}.segments")
        return cls(artifacts=artifacts, segments=segments)
