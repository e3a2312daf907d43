"""K-means personas on the real sample: deterministic, k by silhouette, distinct names."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from jg_personas.clustering import (
    K_RANGE,
    RANDOM_STATE,
    TooFewCustomers,
    fit_personas,
    persona_names,
    slug,
)
from jg_personas.features import FEATURES
from jg_personas.model import PersonaModel

NAMES = [feature.name for feature in FEATURES]


def test_fitting_is_deterministic(features, fitted):
    model, labels = fitted
    again, again_labels = fit_personas(features.sample(frac=1.0, random_state=7).sort_index())
    assert [p.id for p in again.personas] == [p.id for p in model.personas]
    assert np.allclose(again.centroids, model.centroids)
    assert (again_labels == labels).all()


def test_k_is_the_one_with_the_highest_silhouette(features, fitted):
    model, labels = fitted
    scores = {int(k): score for k, score in model.meta["silhouette"].items()}
    assert sorted(scores) == list(K_RANGE)
    assert model.meta["k"] == len(model.personas) == max(scores, key=scores.__getitem__)
    # the recorded score is the silhouette of the labels, recomputed independently
    z = model.standardise(features[NAMES].to_numpy())
    assert silhouette_score(z, labels) == pytest.approx(scores[model.meta["k"]], abs=1e-3)
    assert model.meta["silhouette_sample"] == len(features) < 5000
    assert model.meta["random_state"] == RANDOM_STATE


def test_personas_are_named_distinctly_from_their_centroids(features, fitted):
    model, labels = fitted
    names = [p.name for p in model.personas]
    assert len(set(names)) == len(names) and len({p.id for p in model.personas}) == len(names)
    assert all(p.id == slug(p.name) for p in model.personas)
    # listed by revenue, highest first
    revenue = NAMES.index("revenue")
    assert list(model.centroids[:, revenue]) == sorted(model.centroids[:, revenue], reverse=True)
    for index, persona in enumerate(model.personas):
        members = features.loc[labels == index]
        assert persona.customers == len(members)
        assert persona.medians["revenue"] == pytest.approx(members["revenue"].median())
    # the words follow the centroids: the top cluster spends most, "lapsed" ones are
    top, *_ = model.personas
    assert top.name.startswith("high-value")
    for index, persona in enumerate(model.personas):
        if "lapsed" in persona.name:
            lapsed = features.loc[labels == index, "days_since_last_order"].median()
            assert lapsed > features["days_since_last_order"].median()
        if "one-timers" in persona.name:
            assert persona.medians["orders"] == 1


def test_naming_rules():
    def centroid(**values):
        return [values.get(name, 0.0) for name in NAMES]

    rows = np.array(
        [
            centroid(revenue=1.2, orders_per_year=-0.9, days_since_last_order=0.2),
            centroid(revenue=-1.0, orders_per_year=2.0),
            centroid(revenue=-1.0, orders_per_year=0.3, tenure_days=-0.7),
            centroid(revenue=0.1),
            centroid(revenue=0.8, average_order_value=-0.6, return_rate=0.3),
            centroid(revenue=0.8, average_order_value=-0.6, return_rate=-0.2),
        ]
    )
    names = persona_names(rows, NAMES, [False, False, True, False, False, False])
    assert names == [
        "high-value, infrequent",
        "frequent, low-value",
        # a one-timer cluster's frequency gives no word
        "low-value, new one-timers",
        "average",
        # a clash: both take their next feature's word, whatever its size
        "high-value, small-basket, returning",
        "high-value, small-basket, no-returns",
    ]
    assert slug(names[2]) == "low-value-new-one-timers"
    # identical centroids are numbered
    assert persona_names(np.array([rows[0], rows[0]]), NAMES, [False, False]) == [
        "high-value, infrequent",
        "high-value, infrequent 2",
    ]


def test_nearest_uses_only_the_features_given(fitted, features):
    model, labels = fitted
    row = features.iloc[0]
    full = model.nearest(row.to_dict())
    assert full is model.personas[labels[0]]
    assert model.assign(features.iloc[:50]).tolist() == labels[:50].tolist()
    live = {f.name: row[f.name] for f in FEATURES if f.live}
    assert model.nearest(live) in model.personas
    assert model.nearest({}) is None


def test_a_saved_model_loads_identically(fitted, tmp_path, features):
    model, labels = fitted
    model.save(tmp_path)
    loaded = PersonaModel.load(tmp_path)
    assert loaded.personas == model.personas and loaded.version == tmp_path.name
    assert (loaded.assign(features) == labels).all()
    (tmp_path / "personas.json").write_text('{"format_version": 99}')
    with pytest.raises(ValueError, match="format 99"):
        PersonaModel.load(tmp_path)


def test_too_few_customers_is_an_error(features):
    with pytest.raises(TooFewCustomers, match="at least 9"):
        fit_personas(features.iloc[:8])
