"""The sentence sentiment classifier: MiniLM embeddings and a light lexical model, blended.

Three parts, each a logistic regression or a fixed projection, fitted on labelled sentences:

* **embedding model**: logistic regression on the all-MiniLM-L6-v2 embedding *centred*, plus
  features from a few generic positive and negative anchor phrases (:data:`POLARITY_ANCHORS`):
  the projection on the *polarity direction* (mean positive anchor minus mean negative one)
  and the *closest anchors* -- the highest cosine similarity to a positive anchor, to a
  negative one, and their difference. The anchors are domain-free prior knowledge; they help
  most when the model meets a domain it was not trained on (films after phones and
  restaurants).
* **lexical model**: logistic regression on TF-IDF word 1-2-grams and character 2-5-grams,
  which catches what a small sentence encoder blurs (negations, "worst", "!!!").
* the two log-odds are blended (``lexical_weight``) and **calibrated** with Platt scaling
  fitted on out-of-fold predictions, so :meth:`SentimentModel.probabilities` are honest
  probabilities of "positive" (a 0.9 is right about nine times in ten).

**Centring.** Sentences of one domain share a direction in embedding space (films, phones)
that says nothing about polarity. In training each domain's mean embedding is subtracted
from its sentences, so the classifier learns from what differs *within* a domain. A served
sentence comes from an unknown domain, one at a time: it is centred on the model's
:attr:`~SentimentModel.centre`, the mean of the training domains' means. A caller holding
many unlabelled texts of one domain may centre them on their own mean instead
(``centre=`` of :meth:`~SentimentModel.probabilities`; no labels are used): the evaluation
reports both (:mod:`jg_sentiment.evaluation`).

Embeddings are an argument, not computed here, so that training, evaluation and serving
choose how to encode (cached on disk, micro-batched) -- see :mod:`jg_sentiment.scoring`.
Training encodes with MiniLM in :func:`encoder_precision`: int8 linear layers, exact per
token (:mod:`journeygate.int8`), which measured as accurate as float32 and about 1.7x faster
where the CPU has fast int8 products; float32 elsewhere. The model records it
(:attr:`SentimentModel.precision`), and evaluation and serving encode at that precision.
"""

from __future__ import annotations

import json
import pickle
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from journeygate.encoder import Precision, fast_precision

MODEL_FILE = "model.pkl"
META_FILE = "meta.json"
# 2: centring and closest-anchor features; anchors stored in the artifact.
# 3: embeddings from the encoder in encoder_precision() ("int8" when meta.json says none).
FORMAT_VERSION = 3
FORMAT_3_PRECISION: Precision = "int8"  # what format-3 artifacts without "precision" used


def encoder_precision() -> Precision:
    """The MiniLM precision a model is trained with on this host: int8 where the CPU
    multiplies int8 matrices fast, float32 elsewhere (:func:`journeygate.encoder.
    fast_precision`). An artifact records it and is served at it, wherever it is loaded (its
    vectors must come from the same encoder); ``train-sentiment --if-stale`` retrains one
    of the other precision."""
    return fast_precision()


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


class StaleModelError(ValueError):
    """A published artifact written by another format version: it must be retrained."""


@dataclass(frozen=True, slots=True)
class SentimentParams:
    """Hyperparameters; the defaults were chosen by cross-validation (README, Sentiment)."""

    embedding_c: float = 1.0  # inverse L2 strength of the embedding model
    lexical_c: float = 4.0  # inverse L2 strength of the lexical model
    lexical_weight: float = 0.25  # share of the lexical model's log-odds in the blend
    polarity_scale: float = 5.0  # the polarity feature's scale (so L2 barely shrinks it)
    anchor_scale: float = 5.0  # the same for the three closest-anchor features
    calibration_folds: int = 5
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Anchors:
    """The L2-normalised embeddings of :data:`POLARITY_ANCHORS`, one row per phrase."""

    positive: np.ndarray
    negative: np.ndarray

    @property
    def direction(self) -> np.ndarray:
        """Mean positive anchor minus mean negative one: the polarity direction."""
        return np.asarray(self.positive.mean(axis=0) - self.negative.mean(axis=0), dtype=np.float32)


def domain_means(embeddings: np.ndarray, domains: Sequence[str]) -> dict[str, np.ndarray]:
    """The mean embedding of each domain (one name per embedding), in order of appearance."""
    names = np.asarray(domains)
    if len(names) != len(embeddings):
        raise ValueError("domains and embeddings must have the same length")
    return {name: embeddings[names == name].mean(axis=0) for name in dict.fromkeys(names.tolist())}


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return np.asarray(rows / np.maximum(norms, 1e-12))


def _lexical_model(c: float, seed: int) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
    )
    return make_pipeline(features, LogisticRegression(C=c, max_iter=2000, random_state=seed))


def _centred_anchors(anchors: Anchors, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _unit(anchors.positive - centre), _unit(anchors.negative - centre)


def _features(
    embeddings: np.ndarray,
    centre: np.ndarray,
    centred_anchors: tuple[np.ndarray, np.ndarray],
    direction: np.ndarray,
    params: SentimentParams,
) -> np.ndarray:
    """Centred embedding, polarity projection and closest-anchor similarities. The anchors
    are centred on ``centre`` too, so the similarities compare like with like."""
    centred = embeddings - centre
    polarity = centred @ direction
    unit = _unit(centred)
    closest_positive = (unit @ centred_anchors[0].T).max(axis=1)
    closest_negative = (unit @ centred_anchors[1].T).max(axis=1)
    scale = params.anchor_scale
    return np.hstack(
        [
            centred,
            params.polarity_scale * polarity[:, None],
            scale * closest_positive[:, None],
            scale * closest_negative[:, None],
            scale * (closest_positive - closest_negative)[:, None],
        ]
    )


class LexicalScorer:
    """The lexical pipeline's ``decision_function`` without scikit-learn's per-call machinery.

    For the few sentences of one feedback, input validation and joblib dispatch were about
    four fifths of the lexical model's time (some 4 of 5 ms). The arithmetic is the pipeline's:
    per vectorizer, sublinear term frequency (1 + log count) times idf, L2-normalised, dotted
    with that vectorizer's slice of the logistic regression's coefficients.
    """

    def __init__(self, pipeline: Any) -> None:
        union, regression = pipeline[0], pipeline[-1]
        coefficients = np.asarray(regression.coef_[0], dtype=np.float64)
        self.intercept = float(regression.intercept_[0])
        self.parts: list[tuple[Any, Mapping[str, int], np.ndarray, np.ndarray]] = []
        offset = 0
        for _name, vectorizer in union.transformer_list:
            size = len(vectorizer.vocabulary_)
            self.parts.append(
                (
                    vectorizer.build_analyzer(),
                    vectorizer.vocabulary_,
                    np.asarray(vectorizer.idf_, dtype=np.float64),
                    coefficients[offset : offset + size],
                )
            )
            offset += size

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        scores = np.full(len(texts), self.intercept)
        for row, text in enumerate(texts):
            for analyzer, vocabulary, idf, coefficients in self.parts:
                counts = Counter(vocabulary[term] for term in analyzer(text) if term in vocabulary)
                if not counts:
                    continue
                index = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
                frequency = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
                weights = (1.0 + np.log(frequency)) * idf[index]
                scores[row] += float(weights @ coefficients[index]) / np.linalg.norm(weights)
        return scores


class SentimentModel:
    """Sentence polarity: :meth:`probabilities` of "positive" for texts and their embeddings."""

    def __init__(
        self,
        params: SentimentParams,
        anchors: Anchors,
        centre: np.ndarray,
        embedding_model: Any,
        lexical_model: Any,
        calibration: tuple[float, float],
        precision: Precision | None = None,
    ) -> None:
        self.params = params
        # the MiniLM precision of the embeddings it was trained on, which serving must use:
        # this host's (encoder_precision()) for a model trained here
        self.precision: Precision = precision or encoder_precision()
        self.anchors = anchors
        self.centre = np.asarray(centre, dtype=np.float32)
        self.embedding_model = embedding_model
        self.lexical_model = lexical_model
        self.calibration = calibration
        self._direction = anchors.direction
        # computed once instead of per call: the anchors centred on the served centre, and
        # both heads as plain arrays (scikit-learn's checks cost more than the arithmetic)
        self._served_anchors = _centred_anchors(anchors, self.centre)
        self._embedding_coef = np.asarray(embedding_model.coef_[0], dtype=np.float64)
        self._embedding_intercept = float(embedding_model.intercept_[0])
        self._lexical = LexicalScorer(lexical_model)

    # -- fitting -----------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        positive: np.ndarray,
        embeddings: np.ndarray,
        anchors: Anchors,
        domains: Sequence[str] | None = None,
        params: SentimentParams | None = None,
    ) -> SentimentModel:
        """Fit on ``texts`` (with their ``embeddings``, from ``domains``) labelled ``positive``.

        Each domain is centred on its own mean for fitting; the model serves with the mean of
        the domain means. Calibration is fitted on out-of-fold blended log-odds of sentences
        centred that served way, so the probabilities are calibrated for what serving does.
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold

        params = params or SentimentParams()
        labels = np.asarray(positive, dtype=int)
        if len(texts) != len(labels) or len(texts) != len(embeddings):
            raise ValueError("texts, labels and embeddings must have the same length")
        text_array = np.asarray(texts, dtype=object)
        domain_array = np.asarray(domains if domains is not None else [""] * len(texts))
        out_of_fold = np.zeros(len(labels))
        folds = StratifiedKFold(params.calibration_folds, shuffle=True, random_state=params.seed)
        for train, test in folds.split(text_array, labels):
            fold = cls._fit_parts(
                text_array[train],
                labels[train],
                embeddings[train],
                list(domain_array[train]),
                anchors,
                params,
            )
            out_of_fold[test] = fold.logits(list(text_array[test]), embeddings[test])
        platt = LogisticRegression(C=1e4).fit(out_of_fold[:, None], labels)
        model = cls._fit_parts(text_array, labels, embeddings, list(domain_array), anchors, params)
        model.calibration = (float(platt.coef_[0, 0]), float(platt.intercept_[0]))
        return model

    @classmethod
    def _fit_parts(
        cls,
        texts: np.ndarray,
        labels: np.ndarray,
        embeddings: np.ndarray,
        domains: Sequence[str],
        anchors: Anchors,
        params: SentimentParams,
    ) -> SentimentModel:
        from sklearn.linear_model import LogisticRegression

        means = domain_means(embeddings, domains)
        names = np.asarray(domains)
        features = np.empty((len(embeddings), embeddings.shape[1] + 4))
        for name, mean in means.items():
            members = names == name
            centred_anchors = _centred_anchors(anchors, mean)
            features[members] = _features(
                embeddings[members], mean, centred_anchors, anchors.direction, params
            )
        embedding_model = LogisticRegression(
            C=params.embedding_c, max_iter=2000, random_state=params.seed
        ).fit(features, labels)
        lexical_model = _lexical_model(params.lexical_c, params.seed).fit(list(texts), labels)
        # every domain counts once in the served centre, whatever its size
        centre = np.mean(list(means.values()), axis=0)
        return cls(params, anchors, centre, embedding_model, lexical_model, (1.0, 0.0))

    # -- scoring -----------------------------------------------------------------------

    def _embedding_features(self, embeddings: np.ndarray, centre: np.ndarray) -> np.ndarray:
        anchors = (
            self._served_anchors
            if centre is self.centre
            else _centred_anchors(self.anchors, centre)
        )
        return _features(embeddings, centre, anchors, self._direction, self.params)

    def logits(
        self, texts: Sequence[str], embeddings: np.ndarray, centre: np.ndarray | None = None
    ) -> np.ndarray:
        """Blended, uncalibrated log-odds of "positive", one per text; embeddings centred on
        ``centre`` (default: the served :attr:`centre`)."""
        if not len(texts):
            return np.zeros(0)
        weight = self.params.lexical_weight
        features = self._embedding_features(embeddings, self.centre if centre is None else centre)
        embedding = features @ self._embedding_coef + self._embedding_intercept
        lexical = self._lexical.decision_function(texts)
        return np.asarray((1 - weight) * embedding + weight * lexical, dtype=np.float64)

    def probabilities(
        self, texts: Sequence[str], embeddings: np.ndarray, centre: np.ndarray | None = None
    ) -> np.ndarray:
        """Calibrated probability that each text is positive (``centre``: see :meth:`logits`;
        the calibration was fitted for the served centre)."""
        slope, intercept = self.calibration
        logits = self.logits(texts, embeddings, centre)
        return np.asarray(1.0 / (1.0 + np.exp(-(slope * logits + intercept))))

    # -- persistence -------------------------------------------------------------------

    def save(self, directory: Path, metrics: Mapping[str, Any] | None = None) -> None:
        """``model.pkl`` (the fitted scikit-learn parts, anchors and centre; load only
        artifacts you trained) and ``meta.json`` (format, parameters, calibration and the
        evaluation that came with training)."""
        with (directory / MODEL_FILE).open("wb") as handle:
            pickle.dump(
                {
                    "anchors": {
                        "positive": self.anchors.positive,
                        "negative": self.anchors.negative,
                    },
                    "centre": self.centre,
                    "embedding_model": self.embedding_model,
                    "lexical_model": self.lexical_model,
                },
                handle,
                protocol=pickle.HIGHEST_PROTOCOL,
            )
        meta = {
            "format": FORMAT_VERSION,
            "precision": self.precision,
            "params": asdict(self.params),
            "calibration": list(self.calibration),
            "metrics": dict(metrics or {}),
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> SentimentModel:
        """The model saved in ``directory``, served at the precision it was trained with;
        :class:`StaleModelError` for another format."""
        meta = read_meta(directory)
        problem = unreadable_because(meta)
        if problem is not None:
            raise StaleModelError(
                f"{directory}: {problem}: retrain with `journeygate train-sentiment`"
            )
        with (directory / MODEL_FILE).open("rb") as handle:
            parts = pickle.load(handle)  # our own artifact, written by journeygate
        slope, intercept = meta["calibration"]
        return cls(
            SentimentParams(**meta["params"]),
            Anchors(parts["anchors"]["positive"], parts["anchors"]["negative"]),
            parts["centre"],
            parts["embedding_model"],
            parts["lexical_model"],
            (float(slope), float(intercept)),
            trained_precision(meta),
        )


def trained_precision(meta: Mapping[str, Any]) -> Precision:
    """The MiniLM precision an artifact's embeddings came from."""
    precision = meta.get("precision", FORMAT_3_PRECISION)
    return "float32" if precision == "float32" else "int8"


def unreadable_because(meta: Mapping[str, Any]) -> str | None:
    """Why this version cannot load an artifact with this ``meta.json`` (another format), or
    None."""
    if meta.get("format") != FORMAT_VERSION:
        return (
            f"sentiment model format {meta.get('format')!r}, this version reads format "
            f"{FORMAT_VERSION}"
        )
    return None


def stale_because(meta: Mapping[str, Any]) -> str | None:
    """Why ``train-sentiment --if-stale`` trains again: an artifact this version cannot load,
    or one trained at the precision that is not this host's faster one (it is served at its
    own precision, correctly, but slower than it could be: int8 is 10-40 times slower where
    the CPU lacks fast int8 products). None when it is current."""
    problem = unreadable_because(meta)
    if problem is not None:
        return problem
    trained = trained_precision(meta)
    if trained != encoder_precision():
        return (
            f"sentiment model trained on {trained} embeddings, this host encodes in "
            f"{encoder_precision()}"
        )
    return None


def read_meta(directory: Path) -> dict[str, Any]:
    """``meta.json`` of an artifact (its ``format`` says whether this version can load it)."""
    meta: dict[str, Any] = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    return meta
