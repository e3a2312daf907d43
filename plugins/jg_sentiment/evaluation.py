"""Held-out accuracy of the sentiment model on the labelled sentences, in and across domains.

* **in-domain**: stratified k-fold cross-validation over all sentences (folds stratified by
  source and label), accuracy reported per source: each sentence is scored by a model that
  never saw it but saw its domain.
* **cross-domain**: train on two sources, test on the third, for each of the three.

Every model is fitted with :meth:`SentimentModel.fit` exactly as ``train-sentiment`` fits the
served one (calibration included), on precomputed embeddings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from jg_sentiment.data import SOURCES, Labelled
from jg_sentiment.model import SentimentModel, SentimentParams

Progress = Callable[[str], None]


@dataclass
class Report:
    """Accuracy per source, in-domain and cross-domain (the source is the test set)."""

    in_domain: dict[str, float] = field(default_factory=dict)
    cross_domain: dict[str, float] = field(default_factory=dict)
    folds: int = 5

    def summary(self) -> dict[str, object]:
        return {"folds": self.folds, "in_domain": self.in_domain, "cross_domain": self.cross_domain}

    def table(self) -> str:
        """A plain-text table: one row per source, in-domain and cross-domain accuracy."""
        lines = [
            f"{'test source':<12} {'in-domain (' + str(self.folds) + '-fold CV)':>22} "
            f"{'cross-domain (trained on the others)':>38}"
        ]
        for source in self.in_domain:
            others = "+".join(s for s in SOURCES if s != source)
            cross = self.cross_domain.get(source)
            cross_text = f"{cross:.3f}  ({others})" if cross is not None else "-"
            lines.append(f"{source:<12} {self.in_domain[source]:>22.3f} {cross_text:>38}")
        return "\n".join(lines)


def _accuracy(
    data: Labelled,
    embeddings: np.ndarray,
    direction: np.ndarray,
    params: SentimentParams,
    train: np.ndarray,
    test: np.ndarray,
) -> np.ndarray:
    """Whether each test sentence was classified right by a model fitted on ``train``."""
    texts = np.asarray(data.texts, dtype=object)
    positive = np.asarray([label == "positive" for label in data.labels])
    model = SentimentModel.fit(
        list(texts[train]), positive[train], embeddings[train], direction, params
    )
    predicted = model.probabilities(list(texts[test]), embeddings[test]) > 0.5
    return np.asarray(predicted == positive[test])


def evaluate(
    data: Labelled,
    embeddings: np.ndarray,
    direction: np.ndarray,
    params: SentimentParams | None = None,
    folds: int = 5,
    cross_domain: bool = True,
    progress: Progress | None = None,
) -> Report:
    """In-domain cross-validation and (with ``cross_domain``) the three cross-domain splits."""
    from sklearn.model_selection import StratifiedKFold

    say = progress or (lambda _message: None)
    params = params or SentimentParams()
    sources = np.asarray(data.sources)
    strata = np.asarray(
        [f"{s}:{label}" for s, label in zip(data.sources, data.labels, strict=True)]
    )
    correct = np.zeros(len(data), dtype=bool)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=params.seed)
    for number, (train, test) in enumerate(splitter.split(strata, strata), start=1):
        say(f"in-domain fold {number}/{folds}")
        correct[test] = _accuracy(data, embeddings, direction, params, train, test)
    report = Report(folds=folds)
    for source in dict.fromkeys(data.sources):
        report.in_domain[source] = round(float(correct[sources == source].mean()), 4)
    if cross_domain:
        for source in report.in_domain:
            say(f"cross-domain: test on {source}")
            test = np.flatnonzero(sources == source)
            train = np.flatnonzero(sources != source)
            report.cross_domain[source] = round(
                float(_accuracy(data, embeddings, direction, params, train, test).mean()), 4
            )
    return report
