"""Scoring real feedback: long and mixed texts scored from their sentences, and themes.

The classifier knows single sentences. A review is split into sentences -- and a sentence
into clauses at a contrast ("love the colour, but it fell apart in a week") -- each is scored,
and the polarities are aggregated, each weighted by its own confidence, so a long review is
never truncated and filler ("I bought it in May.") barely counts.

The score is in [-1, 1]. The label is ``mixed`` when the text has both a substantial positive
and a substantial negative side (the smaller at least ``mixed_ratio`` of the larger) or when
the score lies within ``neutral_band`` of 0, else ``positive`` or ``negative``: a mixed message
is not called positive just because its praise came first or was longer.

Themes: each configured theme (``delivery``, ``quality`` …) is described by comma-separated
phrases; a feedback's themes are those with a phrase close to one of its sentences (cosine of
MiniLM embeddings at least ``theme_threshold``), closest first.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from jg_sentiment.model import SentimentModel
from journeygate.encoder import MicroBatchEncoder, encode_packed, encode_texts

DEFAULT_THEMES: Mapping[str, str] = {
    "delivery": "delivery, shipping, the parcel arrived late, courier, tracking, dispatch",
    "quality": "product quality, it broke, fell apart, well made, durable, cheap material",
    "price": "price, too expensive, good value for money, overpriced, discount",
    "service": "customer service, customer support, rude staff, helpful staff, refund, "
    "returns, nobody answered my emails",
    "size": "size and fit, too small, too big, fits well, sizing",
}
LABELS = ("positive", "negative", "mixed")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|[\r\n]+|;\s*")
_CONTRAST = re.compile(
    r",?\s+(?=(?:but|however|although|yet|except|whereas|unfortunately)\b)", re.IGNORECASE
)
_WORD = re.compile(r"\w")


@dataclass(frozen=True, slots=True)
class ScoringSettings:
    """How sentence polarities become one score and label, and how themes are picked."""

    neutral_band: float = 0.2
    mixed_ratio: float = 0.5
    theme_threshold: float = 0.4
    max_themes: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.neutral_band < 1:
            raise ValueError("neutral_band: must be in [0, 1)")
        if not 0 < self.mixed_ratio <= 1:
            raise ValueError("mixed_ratio: must be in (0, 1]")
        if not -1 <= self.theme_threshold <= 1:
            raise ValueError("theme_threshold: must be in [-1, 1]")
        if self.max_themes < 0:
            raise ValueError("max_themes: must not be negative")


@dataclass(frozen=True, slots=True)
class FeedbackScore:
    """One feedback's sentiment: ``score`` in [-1, 1], ``label``, ``themes`` (closest first)
    and the polarity of each scored sentence."""

    score: float
    label: str
    themes: tuple[str, ...]
    sentences: tuple[tuple[str, float], ...]


def split_sentences(text: str) -> list[str]:
    """Sentences, and clauses at a contrast word; pieces without a letter or digit dropped."""
    pieces = []
    for sentence in _SENTENCE_END.split(text):
        for clause in _CONTRAST.split(sentence):
            clause = clause.strip(" \t,-")
            if _WORD.search(clause):
                pieces.append(clause)
    return pieces


def aggregate(polarities: Sequence[float], settings: ScoringSettings) -> tuple[float, str]:
    """The score and label of a text from its sentences' polarities (each in [-1, 1])."""
    values = np.asarray(polarities, dtype=np.float64)
    weights = np.abs(values)
    total = float(weights.sum())
    if total == 0.0:
        return 0.0, "mixed"
    positive = float((weights * np.clip(values, 0, None)).sum())
    negative = float((weights * np.clip(-values, 0, None)).sum())
    score = (positive - negative) / total
    if min(positive, negative) >= settings.mixed_ratio * max(positive, negative):
        return score, "mixed"
    if abs(score) < settings.neutral_band:
        return score, "mixed"
    return score, "positive" if score > 0 else "negative"


class FeedbackScorer:
    """Scores feedback texts with a trained :class:`SentimentModel`.

    :meth:`score` is for the event loop: sentences of concurrent feedback share forward
    passes through a :class:`MicroBatchEncoder` whose batch function embeds *and* classifies
    (one executor hop per batch; repeated sentences come from its cache). :meth:`score_many`
    is the blocking batch path for the command line and evaluation.
    """

    def __init__(
        self,
        model: SentimentModel,
        settings: ScoringSettings | None = None,
        themes: Mapping[str, str] = DEFAULT_THEMES,
        executor: Executor | None = None,
        max_batch: int = 64,
        max_wait_ms: float = 0.0,
        cache_size: int = 4096,
    ) -> None:
        self.model = model
        self.executor = executor
        self.settings = settings or ScoringSettings()
        self.theme_names = tuple(themes)
        phrases = [
            (index, phrase.strip())
            for index, text in enumerate(themes.values())
            for phrase in text.split(",")
            if phrase.strip()
        ]
        self._phrase_theme = np.asarray([index for index, _ in phrases], dtype=np.intp)
        self._phrases = tuple(phrase for _, phrase in phrases)
        self._phrase_vectors: np.ndarray | None = None
        self.batcher = MicroBatchEncoder(
            self.sentence_rows,
            executor=executor,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            cache_size=cache_size,
        )

    def sentence_rows(self, sentences: Sequence[str]) -> np.ndarray:
        """Per sentence: its polarity (2 p - 1) followed by its embedding. Blocking.

        The sentences (of one feedback, or of all feedback in a micro-batch) are encoded
        packed, without padding: the forward passes are most of a feedback's cost."""
        embeddings = encode_packed(sentences, self.model.precision)
        polarity = 2.0 * self.model.probabilities(sentences, embeddings) - 1.0
        return np.hstack([polarity[:, None].astype(np.float32), embeddings])

    def phrase_vectors(self) -> np.ndarray:
        """Embeddings of the themes' phrases (encoded once). Blocking the first time: the
        plugin calls it at startup, in the executor."""
        if self._phrase_vectors is None:
            self._phrase_vectors = encode_texts(self._phrases, precision=self.model.precision)
        return self._phrase_vectors

    def _themes(self, embeddings: np.ndarray) -> tuple[str, ...]:
        if not self._phrases or not self.settings.max_themes:
            return ()
        by_phrase = (embeddings @ self.phrase_vectors().T).max(axis=0)
        closeness = np.full(len(self.theme_names), -1.0)
        np.maximum.at(closeness, self._phrase_theme, by_phrase)
        order = np.argsort(-closeness, kind="stable")[: self.settings.max_themes]
        return tuple(
            self.theme_names[i] for i in order if closeness[i] >= self.settings.theme_threshold
        )

    def _result(self, sentences: Sequence[str], rows: np.ndarray) -> FeedbackScore:
        if not sentences:
            return FeedbackScore(0.0, "mixed", (), ())
        polarities = rows[:, 0].astype(np.float64)
        score, label = aggregate(polarities, self.settings)
        themes = self._themes(rows[:, 1:])
        pairs = tuple(zip(sentences, (round(float(p), 4) for p in polarities), strict=True))
        return FeedbackScore(round(score, 4), label, themes, pairs)

    async def score(self, text: str) -> FeedbackScore:
        """Score one feedback off the event loop, micro-batched with concurrent ones."""
        sentences = split_sentences(text)
        if not sentences:
            return self._result((), np.zeros((0, 0), dtype=np.float32))
        if self._phrase_vectors is None:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.phrase_vectors)
        rows = await self.batcher.encode_many(sentences)
        return self._result(sentences, rows)

    def score_many(self, texts: Sequence[str]) -> list[FeedbackScore]:
        """Score many texts in large batches (blocking: command line, evaluation)."""
        split = [split_sentences(text) for text in texts]
        flat = [sentence for sentences in split for sentence in sentences]
        rows = self.sentence_rows(flat) if flat else np.zeros((0, 0), dtype=np.float32)
        results, start = [], 0
        for sentences in split:
            results.append(self._result(sentences, rows[start : start + len(sentences)]))
            start += len(sentences)
        return results

    async def close(self) -> None:
        await self.batcher.close()
