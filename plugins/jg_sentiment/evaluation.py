"""Held-out accuracy of the sentiment model on the labelled sentences, in and across domains.

* **in-domain**: stratified k-fold cross-validation over all sentences (folds stratified by
  source and label), accuracy reported per source: each sentence is scored by a model that
  never saw it but saw its domain.
* **cross-domain**: train on two sources, test on the third, for each of the three, reported
  twice:

  - *served*: each test sentence is centred on the model's own centre (the mean of its
    training domains' means), exactly as the gateway scores feedback, one text at a time;
  - *test domain centred on itself*: the test sentences are centred on their own mean
    embedding (unsupervised domain adaptation: the mean uses the texts, never their labels).
    It says what a deployment gains by centring on a batch of its own unlabelled feedback;
    the gateway does not do this.

In-domain sentences are scored the served way too. Every model is fitted with
:meth:`SentimentModel.fit` exactly as ``train-sentiment`` fits the served one (per-domain
centring and calibration included), on precomputed embeddings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from jg_sentiment.data import SOURCES, Labelled
from jg_sentiment.model import Anchors, SentimentModel, SentimentParams

Progress = Callable[[str], None]


@dataclass
class Report:
    """Accuracy per source (the source is the test set): in-domain, cross-domain as served,
    and cross-domain with the test domain centred on its own mean."""

    in_domain: dict[str, float] = field(default_factory=dict)
    cross_domain: dict[str, float] = field(default_factory=dict)
    cross_domain_self_centred: dict[str, float] = field(default_factory=dict)
    folds: int = 5

    def summary(self) -> dict[str, object]:
        return {
            "folds": self.folds,
            "in_domain": self.in_domain,
            "cross_domain": self.cross_domain,
            "cross_domain_self_centred": self.cross_domain_self_centred,
        }

    def table(self) -> str:
        """A plain-text table: one row per source, in-domain and cross-domain accuracy."""
        lines = [
            f"{'test source':<12} {'in-domain (' + str(self.folds) + '-fold CV)':>22} "
            f"{'cross-domain, served (trained on)':>34} {'test centred on itself':>23}"
        ]
        for source in self.in_domain:
            others = "+".join(s for s in SOURCES if s != source)
            cross = self.cross_domain.get(source)
            cross_text = f"{cross:.3f}  ({others})" if cross is not None else "-"
            adapted = self.cross_domain_self_centred.get(source)
            adapted_text = f"{adapted:.3f}" if adapted is not None else "-"
            lines.append(
                f"{source:<12} {self.in_domain[source]:>22.3f} {cross_text:>34} {adapted_text:>23}"
            )
        return "\n".join(lines)


def _fit(
    data: Labelled,
    embeddings: np.ndarray,
    anchors: Anchors,
    params: SentimentParams,
    train: np.ndarray,
) -> SentimentModel:
    texts = [data.texts[i] for i in train]
    positive = np.asarray([data.labels[i] == "positive" for i in train])
    domains = [data.sources[i] for i in train]
    return SentimentModel.fit(texts, positive, embeddings[train], anchors, domains, params)


def _correct(
    model: SentimentModel,
    data: Labelled,
    embeddings: np.ndarray,
    test: np.ndarray,
    centre: np.ndarray | None = None,
) -> np.ndarray:
    """Whether each test sentence was classified right (centred on ``centre``, default the
    model's own)."""
    texts = [data.texts[i] for i in test]
    positive = np.asarray([data.labels[i] == "positive" for i in test])
    predicted = model.probabilities(texts, embeddings[test], centre) > 0.5
    return np.asarray(predicted == positive)


def evaluate(
    data: Labelled,
    embeddings: np.ndarray,
    anchors: Anchors,
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
        model = _fit(data, embeddings, anchors, params, train)
        correct[test] = _correct(model, data, embeddings, test)
    report = Report(folds=folds)
    for source in dict.fromkeys(data.sources):
        report.in_domain[source] = round(float(correct[sources == source].mean()), 4)
    if cross_domain:
        for source in report.in_domain:
            say(f"cross-domain: test on {source}")
            test = np.flatnonzero(sources == source)
            model = _fit(data, embeddings, anchors, params, np.flatnonzero(sources != source))
            served = _correct(model, data, embeddings, test)
            own_mean = embeddings[test].mean(axis=0)
            self_centred = _correct(model, data, embeddings, test, own_mean)
            report.cross_domain[source] = round(float(served.mean()), 4)
            report.cross_domain_self_centred[source] = round(float(self_centred.mean()), 4)
    return report
