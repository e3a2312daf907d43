"""The personas plugin: the visitor's persona and rule segments for every decision.

``journeygate_enrich_visitor`` answers from the profile the pipeline already loaded, without
I/O: the persona is the one ``journeygate segment`` stored on the profile (``persona``), or,
for a customer the model has not seen, the nearest centroid of the profile's aggregates
(numpy over at most 8 centroids and 6 features: microseconds). It returns

* ``segment``: the first rule segment that matches (``[plugin.personas] segments``), else the
  persona id (left unset for a visitor with neither);
* ``persona``: the persona id, e.g. ``"high-value-wide-range"`` (None when unknown);
* ``segments``: every matching rule segment, in rule order (a list, maybe empty).

Other plugins (offer eligibility) read ``context.visitor.segment`` and
``context.visitor.attributes["persona"]`` / ``["segments"]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from jg_personas.commands import add_arguments, segment_command
from jg_personas.features import profile_features
from jg_personas.model import PersonaModel
from jg_personas.segments import Segment, matching
from jg_personas.settings import PLUGIN_NAME, PersonaSettings
from journeygate import hookimpl
from journeygate.artifacts import latest_artifact
from journeygate.config import AppConfig
from journeygate.model import DecisionContext

log = logging.getLogger(__name__)


def visitor_segments(
    model: PersonaModel | None,
    segments: Sequence[Segment],
    profile: Mapping[str, Any],
    now: float,
) -> dict[str, Any]:
    """The persona and segments of a stored profile (see the module docstring), with an
    ``explain`` entry when the visitor has either."""
    values: dict[str, Any] = profile_features(profile, now)
    stored = profile.get("persona")
    persona: str | None = None
    source = version = None
    if isinstance(stored, str) and stored:
        persona, source, version = stored, "profile", profile.get("persona_model")
    elif model is not None and values:
        nearest = model.nearest(values)
        if nearest is not None:
            persona, source, version = nearest.id, "nearest_centroid", model.version
    values["persona"] = persona
    matches = matching(segments, values)
    result: dict[str, Any] = {"persona": persona, "segments": matches}
    segment = matches[0] if matches else persona
    if segment is not None:  # None would hide a segment another plugin sets
        result["segment"] = segment
        result["explain"] = {
            "persona": {"id": persona, "source": source, "model": version},
            "segments": matches,
            "figures": values,
        }
    return result


class PersonasPlugin:
    """Sets ``segment``, ``persona`` and ``segments`` on the visitor; adds ``journeygate
    segment``."""

    def __init__(self) -> None:
        self.settings = PersonaSettings()
        self.model: PersonaModel | None = None

    @hookimpl
    async def journeygate_startup(self, config: AppConfig) -> None:
        self.settings = PersonaSettings.from_mapping(config.plugin_config(PLUGIN_NAME).settings)
        root = config.resolve_path(self.settings.artifacts)
        path = latest_artifact(root)
        if path is None:
            log.info("no persona model under %s: stored personas and rules only", root)
            return
        self.model = await asyncio.to_thread(PersonaModel.load, path)
        log.info("personas: %s (%d personas)", path.name, len(self.model.personas))

    @hookimpl
    def journeygate_enrich_visitor(self, context: DecisionContext) -> dict[str, Any]:
        return visitor_segments(
            self.model, self.settings.segments, context.stored.profile, time.time()
        )

    @hookimpl
    def journeygate_register_commands(
        self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]
    ) -> None:
        parser = subparsers.add_parser(
            "segment", help="cluster customers into personas and write them to profiles"
        )
        add_arguments(parser)
        parser.set_defaults(handler=segment_command)
