"""Fitting personas: standardise the features, choose k by silhouette, K-means, name clusters.

* **Transform.** Counts and amounts are heavy-tailed (one wholesaler buys 1,000x what a
  typical customer does), so every feature but the return rate is ``log1p``-transformed, then
  every feature is standardised (zero mean, unit variance), so each weighs the same.
* **k.** K-means (``n_init=10``, ``random_state=0``) for every k in ``K_RANGE``; the k with
  the highest mean silhouette coefficient wins (the smaller k on a tie). The silhouette is
  computed on at most ``SILHOUETTE_SAMPLE`` customers (a fixed random sample), so choosing
  stays fast on large files; every score is kept in the artifact.
* **Order.** Clusters are listed by centroid revenue, highest first, so the same data always
  gives the same order and ids.
* **Names** (:func:`persona_names`): each feature has a word for a high and a low value
  (``WORDS``). A cluster is named by the words of its centroid's most distinctive features:
  features ordered by the absolute standardised centroid value, largest first, taking those of
  at least ``NAME_THRESHOLD`` standard deviations, at most ``NAME_WORDS`` of them ("lapsed,
  low-value"); "average" when no feature stands out. A cluster whose customers' median
  number of orders is 1 is named "... one-timers", and its orders per year give no word (one
  order says nothing about a rate: the profile's rule reads a single order in the last 30
  days as 12 a year). Clusters whose names collide each take their next feature's word (in
  the same order, whatever its size) until the names differ; clusters whose every word
  agrees are numbered instead ("average", "average 2").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

from jg_personas.features import FEATURES
from jg_personas.model import Persona, PersonaModel, log_transform

K_RANGE = range(3, 9)
RANDOM_STATE = 0
N_INIT = 10
SILHOUETTE_SAMPLE = 5000
NAME_THRESHOLD = 0.5
NAME_WORDS = 2
AVERAGE = "average"
ONE_TIMERS = "one-timers"

#: feature -> (word for a high value, word for a low value)
WORDS = {
    "days_since_last_order": ("lapsed", "recent"),
    "orders_per_year": ("frequent", "infrequent"),
    "revenue": ("high-value", "low-value"),
    "average_order_value": ("big-basket", "small-basket"),
    "distinct_products": ("wide-range", "narrow-range"),
    "units_per_order": ("bulk-buying", "few-units"),
    "return_rate": ("returning", "no-returns"),
    "tenure_days": ("long-standing", "new"),
}


class TooFewCustomers(ValueError):
    """Not enough customers to cluster."""


def _word(feature: str, value: float) -> str:
    high, low = WORDS[feature]
    return high if value > 0 else low


def persona_names(
    centroids: np.ndarray, features: Sequence[str], one_timers: Sequence[bool]
) -> list[str]:
    """Distinct names for standardised ``centroids`` (rows), by the rules of this module;
    ``one_timers`` flags the clusters whose median customer ordered once."""
    frequency = features.index("orders_per_year")
    orders = [
        [
            i
            for i in sorted(range(len(features)), key=lambda i: (-abs(row[i]), i))
            if not (once and i == frequency)
        ]
        for row, once in zip(centroids, one_timers, strict=True)
    ]
    counts = [
        min(NAME_WORDS, sum(abs(row[i]) >= NAME_THRESHOLD for i in order))
        for row, order in zip(centroids, orders, strict=True)
    ]

    def name(row: int) -> str:
        words = ", ".join(_word(features[i], centroids[row][i]) for i in orders[row][: counts[row]])
        if one_timers[row]:
            return f"{words} {ONE_TIMERS}" if words else ONE_TIMERS
        return words or AVERAGE

    names = [name(row) for row in range(len(centroids))]
    # Rows whose every word is the same can never be told apart by words: they are numbered.
    full = [
        tuple(_word(features[i], centroids[row][i]) for i in orders[row])
        for row in range(len(centroids))
    ]
    alike = {words for words, count in Counter(full).items() if count > 1}
    while True:
        repeated = {text for text, count in Counter(names).items() if count > 1}
        growable = [
            row
            for row, text in enumerate(names)
            if text in repeated and full[row] not in alike and counts[row] < len(orders[row])
        ]
        if not growable:
            break
        for row in growable:
            counts[row] += 1
            names[row] = name(row)
    seen: Counter[str] = Counter()
    for row, text in enumerate(names):
        seen[text] += 1
        if seen[text] > 1:
            names[row] = f"{text} {seen[text]}"
    return names


def slug(name: str) -> str:
    """A persona's id: its name without commas or spaces ("lapsed, low-value" ->
    "lapsed-low-value")."""
    return "-".join(name.replace(",", " ").split())


def choose_k(z: np.ndarray) -> tuple[KMeans, dict[int, float]]:
    """The K-means fit with the best silhouette over ``K_RANGE``, and every k's score."""
    if len(z) <= max(K_RANGE):
        raise TooFewCustomers(
            f"{len(z)} customers with orders; at least {max(K_RANGE) + 1} are needed"
        )
    sample = min(len(z), SILHOUETTE_SAMPLE)
    best: KMeans | None = None
    scores: dict[int, float] = {}
    for k in K_RANGE:
        fitted = KMeans(n_clusters=k, n_init=N_INIT, random_state=RANDOM_STATE).fit(z)
        scores[k] = float(
            silhouette_score(z, fitted.labels_, sample_size=sample, random_state=RANDOM_STATE)
        )
        if best is None or scores[k] > scores[best.n_clusters]:
            best = fitted
    assert best is not None
    return best, scores


def fit_personas(
    table: pd.DataFrame, about: Mapping[str, Any] | None = None
) -> tuple[PersonaModel, np.ndarray]:
    """Fit the persona model on a feature table (:func:`~jg_personas.features.customer_features`)
    and return it with every row's persona index; ``about`` (source, times) goes into the
    model's metadata."""
    names = [feature.name for feature in FEATURES]
    log = [feature.log for feature in FEATURES]
    transformed = log_transform(table.loc[:, names].to_numpy(dtype=float), log)
    scaler = StandardScaler().fit(transformed)
    z = scaler.transform(transformed)
    fitted, scores = choose_k(z)
    revenue = names.index("revenue")
    order = np.argsort(-fitted.cluster_centers_[:, revenue], kind="stable")
    centroids = fitted.cluster_centers_[order]
    labels = np.argsort(order)[fitted.labels_]
    medians = table.groupby(labels).median()
    titles = persona_names(centroids, names, list(medians["orders"] <= 1))
    personas = tuple(
        Persona(
            id=slug(title),
            name=title,
            centroid=tuple(float(v) for v in centroids[index]),
            customers=int((labels == index).sum()),
            medians={column: float(medians.loc[index, column]) for column in table.columns},
        )
        for index, title in enumerate(titles)
    )
    meta = {
        **(about or {}),
        "k": len(personas),
        "k_criterion": f"highest mean silhouette over k = {K_RANGE.start}..{K_RANGE.stop - 1}",
        "silhouette": {str(k): round(score, 4) for k, score in scores.items()},
        "silhouette_sample": min(len(z), SILHOUETTE_SAMPLE),
        "random_state": RANDOM_STATE,
        "customers": len(table),
    }
    model = PersonaModel(
        features=tuple(names),
        log=tuple(log),
        mean=np.asarray(scaler.mean_, dtype=float),
        scale=np.asarray(scaler.scale_, dtype=float),
        personas=personas,
        meta=meta,
    )
    return model, labels
