"""The sentiment plugin: scores feedback events and keeps the visitor's mood in the profile.

* ``journeygate_observe_event``: for each ``feedback`` event (``POST /v1/feedback``, or any
  ``Feedback Submitted`` event) the text is scored off the event loop, micro-batched with
  concurrent feedback (:class:`jg_sentiment.scoring.FeedbackScorer`), and blended into the
  profile by the store in one atomic step (``store.blend_score``, so feedback scored at the
  same time by two workers all counts):

  ==================  =====================================================================
  ``sentiment``       time-decayed score in [-1, 1] as of ``sentiment_at``: the feedback's
                      score averaged with the previous value, the older of the two counting
                      with its decay factor (``half_life_days``; see
                      :func:`journeygate.store.decay.blended`)
  ``sentiment_at``    event time (epoch seconds) of the newest feedback
  ``feedback_label``  the newest feedback's label: positive, negative or mixed
  ``feedback_themes`` the newest feedback's themes (delivery, quality, price, service, size …)
  ==================  =====================================================================

* ``journeygate_merge_scores``: when an identify/alias merges an anonymous visitor into a
  customer, the anonymous profile's ``sentiment`` is blended into the customer's by the same
  rule, as if its feedback had been the customer's (the older counts with its decay weight;
  label and themes are the newer feedback's). The store does it once per merge.
* ``journeygate_enrich_visitor``: ``sentiment`` decayed to now (halved every
  ``half_life_days``: an old complaint fades), with ``feedback_label`` and ``feedback_themes``
  as visitor attributes, so offers and triggers see ``visitor.sentiment``.
* ``journeygate_register_commands``: ``train-sentiment`` and ``score-sentiment``.

The model (MiniLM and the classifier) is loaded only where feedback is scored, in the
processes that apply events: ``journeygate worker`` with Redis, the gateway itself without. A
gateway with Redis (role ``gateway``) only reads stored sentiment into decisions and loads no
model. Without a trained artifact, or with one of an older format, the plugin still starts
(feedback is stored as events, nothing is scored, stored sentiment still decays into
decisions) and logs how to train one; restart the workers (or the gateway without Redis)
after training.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping
from concurrent.futures import Executor
from typing import Any

from jg_sentiment.model import SentimentModel, StaleModelError
from jg_sentiment.scoring import FeedbackScore, FeedbackScorer
from jg_sentiment.settings import PLUGIN_NAME, SentimentSettings
from jg_sentiment.training import (
    add_arguments_score,
    add_arguments_train,
    score_command,
    train_command,
)
from journeygate import hookimpl
from journeygate.artifacts import latest_artifact
from journeygate.catalog import Catalog
from journeygate.config import AppConfig
from journeygate.encoder import set_torch_threads
from journeygate.events.schema import FEEDBACK_KIND, Event
from journeygate.hookspecs import ROLE_EMBEDDED, ROLE_WORKER
from journeygate.model import DecisionContext
from journeygate.store import DecayedScore, ProfileStore
from journeygate.store.decay import decayed, stored_score

log = logging.getLogger(__name__)

SHUTDOWN_WAIT_S = 10.0
SCORING_ROLES = frozenset({ROLE_WORKER, ROLE_EMBEDDED})  # the processes that apply events
DETAIL_FIELDS = ("feedback_label", "feedback_themes")  # the newest feedback's


def sentiment_score(result: FeedbackScore, at: float, half_life_s: float) -> DecayedScore:
    """One scored feedback at event time ``at``, as the store blends it into the profile."""
    details = {"feedback_label": result.label, "feedback_themes": list(result.themes)}
    return DecayedScore("sentiment", result.score, at, half_life_s, details)


class SentimentPlugin:
    """Feedback sentiment in profiles and decisions; see the module docstring."""

    def __init__(self) -> None:
        self.settings = SentimentSettings()
        self.scorer: FeedbackScorer | None = None
        self.store: ProfileStore | None = None
        self._pending: set[asyncio.Task[None]] = set()

    @hookimpl
    def journeygate_register_commands(
        self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]
    ) -> None:
        train = subparsers.add_parser(
            "train-sentiment",
            help="train the feedback sentiment model and report held-out accuracy",
        )
        add_arguments_train(train)
        train.set_defaults(handler=train_command)
        score = subparsers.add_parser(
            "score-sentiment",
            help="score a file of text<TAB>label lines; print accuracy and balanced accuracy",
        )
        add_arguments_score(score)
        score.set_defaults(handler=score_command)

    @hookimpl
    async def journeygate_startup(
        self,
        config: AppConfig,
        catalog: Catalog,
        executor: Executor,
        store: ProfileStore,
        role: str,
    ) -> None:
        self.settings = SentimentSettings.from_mapping(config.plugin_config(PLUGIN_NAME).settings)
        self.store = store
        if role not in SCORING_ROLES:
            log.info("no sentiment model in the %s process: feedback is scored by workers", role)
            return
        path = latest_artifact(config.resolve_path(self.settings.artifacts))
        if path is None:
            log.warning(
                "no sentiment model in %s: feedback is stored but not scored until "
                "`journeygate train-sentiment` has run and the process restarts",
                self.settings.artifacts,
            )
            return
        loop = asyncio.get_running_loop()
        try:
            model = await loop.run_in_executor(executor, SentimentModel.load, path)
        except StaleModelError as error:
            log.error("%s; feedback is stored but not scored until then", error)
            return
        scorer = FeedbackScorer(
            model,
            self.settings.scoring,
            self.settings.themes,
            executor=executor,
            max_batch=self.settings.max_batch,
            max_wait_ms=self.settings.max_wait_ms,
        )
        await loop.run_in_executor(executor, set_torch_threads, self.settings.torch_threads)
        await loop.run_in_executor(executor, scorer.phrase_vectors)  # loads MiniLM too
        self.scorer = scorer
        log.info("sentiment model %s loaded", path.name)

    @hookimpl
    async def journeygate_shutdown(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=SHUTDOWN_WAIT_S)
        if self.scorer is not None:
            await self.scorer.close()

    @hookimpl
    def journeygate_observe_event(self, event: Event) -> Coroutine[Any, Any, None] | None:
        if event.kind != FEEDBACK_KIND or self.scorer is None or self.store is None:
            return None
        text = event.properties.get("text")
        if not isinstance(text, str) or not text:
            return None
        return self._observe_feedback(event, text)

    async def _observe_feedback(self, event: Event, text: str) -> None:
        """Score and record in a task of its own: when the observer's budget runs out, the
        wait is cancelled but the task finishes (and shutdown waits for it)."""
        task = asyncio.get_running_loop().create_task(self._record(event, text))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        await asyncio.shield(task)

    async def _record(self, event: Event, text: str) -> None:
        assert self.scorer is not None and self.store is not None
        result = await self.scorer.score(text)
        score = sentiment_score(result, event.timestamp, self.settings.half_life_s)
        await self.store.blend_score(event.profile_id, score)

    @hookimpl
    def journeygate_merge_scores(self, profile: Mapping[str, Any]) -> list[DecayedScore] | None:
        stored = stored_score(profile, "sentiment")
        if stored is None:
            return None
        details = {name: profile[name] for name in DETAIL_FIELDS if name in profile}
        return [DecayedScore("sentiment", *stored, self.settings.half_life_s, details)]

    @hookimpl
    def journeygate_enrich_visitor(self, context: DecisionContext) -> dict[str, Any] | None:
        profile = context.stored.profile
        stored = stored_score(profile, "sentiment")
        if stored is None:
            return None
        value, since = stored
        now = time.time()
        current = round(decayed(value, since, now, self.settings.half_life_s), 4)
        return {
            "sentiment": current,
            "feedback_label": profile.get("feedback_label"),
            "feedback_themes": profile.get("feedback_themes") or [],
            "explain": {
                "sentiment": {
                    "stored": value,
                    "age_days": round(max(now - since, 0.0) / 86400, 2),
                    "half_life_days": self.settings.half_life_days,
                }
            },
        }
