"""The sentence sentiment classifier: MiniLM embeddings and a light lexical model, blended.

Three parts, each a logistic regression or a fixed projection, fitted on labelled sentences:

* **embedding model**: logistic regression on the L2-normalised all-MiniLM-L6-v2 embedding,
  plus one extra feature, the embedding's projection on a *polarity direction* (the mean
  embedding of a few generic positive phrases minus that of generic negative ones, see
  :data:`POLARITY_ANCHORS`). The direction is domain-free prior knowledge; it helps most when
  the model meets a domain it was not trained on (films after phones and restaurants).
* **lexical model**: logistic regression on TF-IDF word 1-2-grams and character 2-5-grams,
  which catches what a small sentence encoder blurs (negations, "worst", "!!!").
* the two log-odds are blended (``lexical_weight``) and **calibrated** with Platt scaling
  fitted on out-of-fold predictions, so :meth:`SentimentModel.probabilities` are honest
  probabilities of "positive" (a 0.9 is right about nine times in ten).

Embeddings are an argument, not computed here, so that training, evaluation and serving
choose how to encode (cached on disk, micro-batched) -- see :mod:`jg_sentiment.scoring`.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODEL_FILE = "model.pkl"
META_FILE = "meta.json"
FORMAT_VERSION = 1

POLARITY_ANCHORS: Mapping[str, tuple[str, ...]] = {
    "positive": (
        "I loved it, excellent, highly recommend.",
        "This is great, wonderful and amazing.",
        "Very good, I am happy with it.",
        "Best ever, fantastic quality.",
    ),
    "negative": (
        "I hated it, terrible, do not recommend.",
        "This is awful, horrible and disappointing.",
        "Very bad, I am unhappy with it.",
        "Worst ever, poor quality, a waste.",
    ),
}


@dataclass(frozen=True, slots=True)
class SentimentParams:
    """Hyperparameters; the defaults were chosen by cross-validation (README, Sentiment)."""

    embedding_c: float = 1.0  # inverse L2 strength of the embedding model
    lexical_c: float = 4.0  # inverse L2 strength of the lexical model
    lexical_weight: float = 0.25  # share of the lexical model's log-odds in the blend
    polarity_scale: float = 5.0  # the polarity feature's scale (so L2 barely shrinks it)
    calibration_folds: int = 5
    seed: int = 0


def _lexical_model(c: float, seed: int) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
    )
    return make_pipeline(features, LogisticRegression(C=c, max_iter=2000, random_state=seed))


class SentimentModel:
    """Sentence polarity: :meth:`probabilities` of "positive" for texts and their embeddings."""

    def __init__(
        self,
        params: SentimentParams,
        direction: np.ndarray,
        embedding_model: Any,
        lexical_model: Any,
        calibration: tuple[float, float],
    ) -> None:
        self.params = params
        self.direction = direction
        self.embedding_model = embedding_model
        self.lexical_model = lexical_model
        self.calibration = calibration

    # -- fitting -----------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        positive: np.ndarray,
        embeddings: np.ndarray,
        direction: np.ndarray,
        params: SentimentParams | None = None,
    ) -> SentimentModel:
        """Fit on ``texts`` (with their ``embeddings``) labelled ``positive`` (booleans).

        ``direction`` is :func:`polarity_direction` (the anchors' embeddings, computed once by
        the caller's encoder). Calibration is fitted on out-of-fold blended log-odds.
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold

        params = params or SentimentParams()
        labels = np.asarray(positive, dtype=int)
        if len(texts) != len(labels) or len(texts) != len(embeddings):
            raise ValueError("texts, labels and embeddings must have the same length")
        text_array = np.asarray(texts, dtype=object)
        out_of_fold = np.zeros(len(labels))
        folds = StratifiedKFold(params.calibration_folds, shuffle=True, random_state=params.seed)
        for train, test in folds.split(text_array, labels):
            fold = cls._fit_parts(
                text_array[train], labels[train], embeddings[train], direction, params
            )
            out_of_fold[test] = fold.logits(list(text_array[test]), embeddings[test])
        platt = LogisticRegression(C=1e4).fit(out_of_fold[:, None], labels)
        model = cls._fit_parts(text_array, labels, embeddings, direction, params)
        model.calibration = (float(platt.coef_[0, 0]), float(platt.intercept_[0]))
        return model

    @classmethod
    def _fit_parts(
        cls,
        texts: np.ndarray,
        labels: np.ndarray,
        embeddings: np.ndarray,
        direction: np.ndarray,
        params: SentimentParams,
    ) -> SentimentModel:
        from sklearn.linear_model import LogisticRegression

        model = cls(params, direction, None, None, (1.0, 0.0))
        model.embedding_model = LogisticRegression(
            C=params.embedding_c, max_iter=2000, random_state=params.seed
        ).fit(model._embedding_features(embeddings), labels)
        model.lexical_model = _lexical_model(params.lexical_c, params.seed).fit(list(texts), labels)
        return model

    # -- scoring -----------------------------------------------------------------------

    def _embedding_features(self, embeddings: np.ndarray) -> np.ndarray:
        polarity = embeddings @ self.direction
        return np.hstack([embeddings, self.params.polarity_scale * polarity[:, None]])

    def logits(self, texts: Sequence[str], embeddings: np.ndarray) -> np.ndarray:
        """Blended, uncalibrated log-odds of "positive", one per text."""
        if not len(texts):
            return np.zeros(0)
        weight = self.params.lexical_weight
        embedding = self.embedding_model.decision_function(self._embedding_features(embeddings))
        lexical = self.lexical_model.decision_function(list(texts))
        return np.asarray((1 - weight) * embedding + weight * lexical, dtype=np.float64)

    def probabilities(self, texts: Sequence[str], embeddings: np.ndarray) -> np.ndarray:
        """Calibrated probability that each text is positive."""
        slope, intercept = self.calibration
        return np.asarray(
            1.0 / (1.0 + np.exp(-(slope * self.logits(texts, embeddings) + intercept)))
        )

    # -- persistence -------------------------------------------------------------------

    def save(self, directory: Path, metrics: Mapping[str, Any] | None = None) -> None:
        """``model.pkl`` (the fitted scikit-learn parts; load only artifacts you trained) and
        ``meta.json`` (parameters, calibration and the evaluation that came with training)."""
        with (directory / MODEL_FILE).open("wb") as handle:
            pickle.dump(
                {
                    "direction": self.direction,
                    "embedding_model": self.embedding_model,
                    "lexical_model": self.lexical_model,
                },
                handle,
                protocol=pickle.HIGHEST_PROTOCOL,
            )
        meta = {
            "format": FORMAT_VERSION,
            "params": asdict(self.params),
            "calibration": list(self.calibration),
            "metrics": dict(metrics or {}),
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> SentimentModel:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{directory}: sentiment artifact format {meta.get('format')!r}")
        with (directory / MODEL_FILE).open("rb") as handle:
            parts = pickle.load(handle)  # our own artifact, written by journeygate
        slope, intercept = meta["calibration"]
        return cls(
            SentimentParams(**meta["params"]),
            parts["direction"],
            parts["embedding_model"],
            parts["lexical_model"],
            (float(slope), float(intercept)),
        )


def polarity_direction(anchor_embeddings: Mapping[str, np.ndarray]) -> np.ndarray:
    """Mean positive anchor embedding minus mean negative one (see :data:`POLARITY_ANCHORS`)."""
    direction = anchor_embeddings["positive"].mean(axis=0) - anchor_embeddings["negative"].mean(
        axis=0
    )
    return np.asarray(direction, dtype=np.float32)
