"""The hybrid recommender: implicit ALS/BPR, basket co-occurrence, content embeddings,
buy-again, popularity and trending, blended per request.

Every component scores all items; :func:`blend` scales each component to a maximum of 1 per
user and adds them with the weights of :class:`RecommenderParams`. The same functions score one
visitor in a request and all test customers at once in the offline evaluation, so what is
evaluated is what is served. Serving methods return ``(item_id, score, reason)`` tuples, best
first; ``reason`` names the component that contributed most to the item's score.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from jg_recommender.interactions import confidence_matrix
from journeygate.catalog import Product

FORMAT_VERSION = 1
ARRAYS_FILE = "arrays.npz"
META_FILE = "meta.json"
Ranking = list[tuple[str, float, str]]

# Ties, and items a sparse component does not score at all, are ordered by popularity.
TIE_BREAK = 1e-4
# Components of the per-user blend, and the reason shown when one contributes most.
REASONS: Mapping[str, str] = {
    "cf": "customers like you",
    "cooc": "bought together with your items",
    "content": "similar to your items",
    "buy_again": "bought before",
    "trend": "trending",
    "pop": "popular",
    "session": "related to your session",
}


@dataclass(frozen=True)
class RecommenderParams:
    """Training parameters and blend weights.

    The defaults were chosen on the validation month of the full Online Retail data (the
    month before the test month; see docs/evaluation.md), never on the test month.
    """

    algorithm: str = "als"  # "als" or "bpr" (implicit's CPU models)
    factors: int = 64
    regularization: float = 10.0
    alpha: float = 1.0  # ALS confidence scale: C = 1 + alpha * log1p(weight)
    iterations: int = 15
    learning_rate: float = 0.01  # BPR only
    half_life_days: float = 14.0  # recency decay of interaction weights
    buy_again_half_life_days: float = 90.0  # recency decay of the buy-again score
    trending_days: float = 30.0  # window of the trending popularity
    neighbours: int = 100  # co-occurrence neighbours kept per item
    # "For you" blend when repeats are allowed (a storefront where customers re-order).
    w_cf: float = 1.0
    w_cooc: float = 0.1
    w_content: float = 0.0
    w_buy_again: float = 2.0
    w_trend: float = 0.7
    w_pop: float = 0.3
    # "For you" blend without repeats (allow_repeats=False: nothing bought before is shown,
    # so buy-again has nothing to score and the other components are weighted for discovery).
    discovery_w_cf: float = 1.0
    discovery_w_cooc: float = 0.0
    discovery_w_content: float = 0.1
    discovery_w_trend: float = 1.0
    discovery_w_pop: float = 0.0
    w_session: float = 2.0  # pull of the items viewed or added in this session (not tuned)
    # Item-neighbour blend (anonymous sessions, similar items); not tuned offline.
    item_w_cf: float = 1.0
    item_w_cooc: float = 1.0
    item_w_content: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.algorithm not in {"als", "bpr"}:
            raise ValueError(f"algorithm must be 'als' or 'bpr', not {self.algorithm!r}")

    @classmethod
    def for_algorithm(cls, algorithm: str) -> RecommenderParams:
        """Defaults for ``algorithm``. BPR's SGD needs far more iterations and far less
        regularisation than ALS (values checked on the validation window; ALS is better)."""
        if algorithm == "bpr":
            return cls(algorithm="bpr", regularization=0.01, iterations=100)
        return cls(algorithm=algorithm)

    def user_weights(self, allow_repeats: bool = True) -> dict[str, float]:
        """Weights of the "for you" blend, by component name."""
        if not allow_repeats:
            return {
                "cf": self.discovery_w_cf,
                "cooc": self.discovery_w_cooc,
                "content": self.discovery_w_content,
                "trend": self.discovery_w_trend,
                "pop": self.discovery_w_pop,
            }
        return {
            "cf": self.w_cf,
            "cooc": self.w_cooc,
            "content": self.w_content,
            "buy_again": self.w_buy_again,
            "trend": self.w_trend,
            "pop": self.w_pop,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RecommenderParams:
        """Parameters from ``meta.json`` or a config table; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown recommender parameter {sorted(unknown)[0]!r}")
        return cls(**values)


def scaled(scores: np.ndarray) -> np.ndarray:
    """Scores divided by their largest magnitude along the last axis (all-zero rows stay 0),
    so components with different ranges can be added with comparable weights."""
    top = np.abs(scores).max(axis=-1, keepdims=True)
    return scores / np.where(top > 0, top, 1.0)


def weighted(
    components: Mapping[str, np.ndarray], weights: Mapping[str, float]
) -> dict[str, np.ndarray]:
    """Each component with a non-zero weight, scaled and multiplied by its weight.

    Components are ``(n_items,)`` (global) or ``(n_users, n_items)`` arrays. Popularity is
    always included with at least :data:`TIE_BREAK`, so it orders ties and the items a sparse
    component does not score.
    """
    weights = {**weights, "pop": weights.get("pop", 0.0) + TIE_BREAK}
    return {name: w * scaled(components[name]) for name, w in weights.items() if w}


def total(parts: Mapping[str, np.ndarray]) -> np.ndarray:
    """The sum of :func:`weighted` components (broadcast shape)."""
    values = iter(parts.values())
    result = next(values)
    for part in values:
        result = result + part
    return result


def blend(components: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """The blended score of ``components`` with these weights."""
    return total(weighted(components, weights))


def top_indices(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest scores along the last axis, best first (argpartition,
    then a sort of those ``n`` only)."""
    n = min(n, scores.shape[-1])
    if n <= 0:
        return np.zeros((*scores.shape[:-1], 0), dtype=np.int64)
    part = np.argpartition(-scores, n - 1, axis=-1)[..., :n]
    order = np.argsort(-np.take_along_axis(scores, part, axis=-1), axis=-1, kind="stable")
    return np.take_along_axis(part, order, axis=-1)


def _top_k_rows(matrix: sp.csr_matrix, k: int, chunk: int = 512) -> sp.csr_matrix:
    """Keep the ``k`` largest positive entries of each row (bounded memory: dense chunks)."""
    rows, cols, vals = [], [], []
    k = min(k, matrix.shape[1])
    for start in range(0, matrix.shape[0], chunk):
        dense = matrix[start : start + chunk].toarray()
        idx = np.argpartition(-dense, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(dense, idx, axis=1)
        keep = top > 0
        rows.append(np.nonzero(keep)[0] + start)
        cols.append(idx[keep])
        vals.append(top[keep])
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=matrix.shape,
        dtype=np.float32,
    )


def cooccurrence(
    interactions: pd.DataFrame, items: Sequence[str] | np.ndarray, neighbours: int
) -> sp.csr_matrix:
    """Item × item basket co-occurrence, cosine-normalised (``n_ij / sqrt(n_i n_j)``) so
    best-sellers do not neighbour everything, keeping ``neighbours`` per item."""
    lines = interactions.loc[interactions["basket_id"].notna(), ["basket_id", "item_id"]]
    item_pos = pd.Index(items).get_indexer(lines["item_id"])
    known = item_pos >= 0
    baskets, basket_pos = np.unique(
        lines["basket_id"].to_numpy(dtype=str)[known], return_inverse=True
    )
    incidence = sp.csr_matrix(
        (np.ones(int(known.sum()), dtype=np.float32), (basket_pos, item_pos[known])),
        shape=(len(baskets), len(items)),
    )
    incidence.sum_duplicates()
    incidence.data[:] = 1.0
    counts = (incidence.T @ incidence).tocsr()
    counts.setdiag(0)
    counts.eliminate_zeros()
    baskets_per_item = np.asarray(incidence.sum(axis=0)).ravel()
    norm = sp.diags(1.0 / np.sqrt(np.maximum(baskets_per_item, 1.0)))
    return _top_k_rows((norm @ counts @ norm).tocsr(), neighbours)


def _distinct_users(interactions: pd.DataFrame, items: Sequence[str] | np.ndarray) -> np.ndarray:
    """Number of distinct users per item (popularity that one bulk buyer cannot inflate)."""
    pairs = interactions[["user_id", "item_id"]].drop_duplicates()
    counts = pairs["item_id"].value_counts()
    users: np.ndarray = counts.reindex(pd.Index(items), fill_value=0).to_numpy(dtype=np.float32)
    return users


def _normalised_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _fit_factors(
    confidence: sp.csr_matrix, params: RecommenderParams
) -> tuple[np.ndarray, np.ndarray]:
    """User and item factors from implicit's CPU ALS or BPR.

    BLAS is limited to one thread around construction and fit, as implicit recommends (its
    own threads do the parallel work; nested OpenBLAS threads slow it down severely).
    """
    # Imported here (implicit is slow to import and only training needs it), but before the
    # limit: the import loads BLAS libraries that threadpool_limits must already see.
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    ratings = confidence.copy()
    ratings.data = np.log1p(ratings.data).astype(np.float32)
    with threadpool_limits(1, "blas"):
        model: Any
        if params.algorithm == "als":
            model = AlternatingLeastSquares(
                factors=params.factors,
                regularization=params.regularization,
                alpha=params.alpha,
                iterations=params.iterations,
                random_state=params.seed,
                num_threads=0,
            )
        else:
            model = BayesianPersonalizedRanking(
                factors=params.factors,
                learning_rate=params.learning_rate,
                regularization=params.regularization,
                iterations=params.iterations,
                random_state=params.seed,
                num_threads=0,
            )
        model.fit(ratings, show_progress=False)
    return (
        np.ascontiguousarray(model.user_factors, dtype=np.float32),
        np.ascontiguousarray(model.item_factors, dtype=np.float32),
    )


class HybridRecommender:
    """A fitted model: arrays only (no implicit objects), so it loads fast and is thread-safe
    for concurrent reads."""

    def __init__(
        self,
        *,
        item_ids: np.ndarray,
        item_categories: np.ndarray,
        user_ids: np.ndarray,
        user_factors: np.ndarray,
        item_factors: np.ndarray,
        confidence: sp.csr_matrix,
        purchased: sp.csr_matrix,
        cooc: sp.csr_matrix,
        popularity: np.ndarray,
        trending: np.ndarray,
        embeddings: np.ndarray | None,
        params: RecommenderParams,
        meta: Mapping[str, Any],
    ) -> None:
        self._items = item_ids
        self._item_ids = tuple(str(i) for i in item_ids)
        self._item_index = {item: pos for pos, item in enumerate(self._item_ids)}
        self._categories = item_categories
        self._user_ids = user_ids
        self._user_index = {str(user): pos for pos, user in enumerate(user_ids)}
        self.user_factors = user_factors
        self.item_factors = item_factors
        self._item_factors_n = _normalised_rows(item_factors)
        self.confidence = confidence
        self.purchased = purchased
        self.cooc = cooc
        self.popularity = popularity
        self.trending_counts = trending
        self.embeddings = embeddings
        self.params = params
        self._meta = dict(meta)
        # Content profile of each user: confidence-weighted mean of the embeddings of the items
        # they interacted with (re-normalised, so a dot product is a cosine similarity).
        self._profiles = (
            _normalised_rows(np.asarray(confidence @ embeddings))
            if embeddings is not None
            else None
        )
        self._pop = np.log1p(popularity)
        self._trend = np.log1p(trending)

    # -- fitting -------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        interactions: pd.DataFrame,
        products: Sequence[Product],
        params: RecommenderParams | None = None,
        embeddings: np.ndarray | None = None,
    ) -> HybridRecommender:
        """Fit every component on ``interactions``; items are ``products`` (in that order),
        so products without interactions are cold-start items served by content alone.

        ``embeddings`` are the products' content embeddings (``encode_texts`` of
        ``Product.text``, aligned with ``products``); without them the content component is off.
        """
        params = params or RecommenderParams()
        item_ids = np.asarray([p.product_id for p in products], dtype=str)
        if embeddings is not None and embeddings.shape[0] != len(item_ids):
            raise ValueError(f"{embeddings.shape[0]} embeddings for {len(item_ids)} products")
        known = interactions.loc[interactions["item_id"].isin(pd.Index(item_ids))]
        if known.empty:
            raise ValueError("no interactions with any of the products")
        end = known["timestamp"].max()
        confidence, user_ids, _ = confidence_matrix(known, item_ids, params.half_life_days, now=end)
        purchased, _, _ = confidence_matrix(
            known.loc[known["event"] == "purchase"],
            item_ids,
            params.buy_again_half_life_days,
            users=user_ids,
            now=end,
        )
        user_factors, item_factors = _fit_factors(confidence, params)
        recent = known.loc[known["timestamp"] > end - pd.Timedelta(days=params.trending_days)]
        meta = {
            "format_version": FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "data_window": {
                "first": known["timestamp"].min().isoformat(),
                "last": end.isoformat(),
            },
            "params": params.to_dict(),
            "counts": {
                "interactions": len(known),
                "users": len(user_ids),
                "items": len(item_ids),
                "items_with_interactions": int(np.count_nonzero(confidence.getnnz(axis=0))),
            },
        }
        return cls(
            item_ids=item_ids,
            item_categories=np.asarray([p.category for p in products], dtype=str),
            user_ids=user_ids,
            user_factors=user_factors,
            item_factors=item_factors,
            confidence=confidence,
            purchased=purchased,
            cooc=cooccurrence(known, item_ids, params.neighbours),
            popularity=_distinct_users(known, item_ids),
            trending=_distinct_users(recent, item_ids),
            embeddings=None if embeddings is None else np.asarray(embeddings, dtype=np.float32),
            params=params,
            meta=meta,
        )

    # -- properties ----------------------------------------------------------------------

    @property
    def item_ids(self) -> tuple[str, ...]:
        return self._item_ids

    @property
    def has_content(self) -> bool:
        return self.embeddings is not None

    @property
    def meta(self) -> dict[str, Any]:
        """Artifact metadata: format version, creation time, data window, params, counts,
        metrics (when saved with them). A copy: changing it does not change the model."""
        return copy.deepcopy(self._meta)

    def has_user(self, user_id: str) -> bool:
        return user_id in self._user_index

    def item_index(self, item_ids: Collection[str]) -> np.ndarray:
        """Positions of the known items among ``item_ids`` (unknown ids are skipped)."""
        return np.asarray(
            [self._item_index[i] for i in item_ids if i in self._item_index], dtype=np.int64
        )

    def user_index(self, user_ids: Sequence[str]) -> np.ndarray:
        """Row positions of ``user_ids``; every one must be known."""
        return np.asarray([self._user_index[u] for u in user_ids], dtype=np.int64)

    # -- scoring building blocks (shared by serving and the offline evaluation) ---------

    def user_components(
        self, rows: np.ndarray, weights: Mapping[str, float] | None = None
    ) -> dict[str, np.ndarray]:
        """Component scores for the users at ``rows``: ``(len(rows), n_items)`` arrays for
        personal components, ``(n_items,)`` for global ones. Only components with a non-zero
        weight are computed (all of them when ``weights`` is None)."""

        def wanted(name: str) -> bool:
            return weights is None or bool(weights.get(name))

        components: dict[str, np.ndarray] = {"pop": self._pop}
        if wanted("trend"):
            components["trend"] = self._trend
        if wanted("cf"):
            components["cf"] = self.user_factors[rows] @ self.item_factors.T
        if wanted("cooc"):
            history = self.confidence[rows]
            history.data = np.log1p(history.data)
            components["cooc"] = np.asarray((history @ self.cooc).todense())
        if wanted("content"):
            components["content"] = (
                self._profiles[rows] @ self.embeddings.T
                if self._profiles is not None and self.embeddings is not None
                else np.zeros((len(rows), len(self._items)), dtype=np.float32)
            )
        if wanted("buy_again"):
            components["buy_again"] = self.purchased[rows].toarray()
        return components

    def purchased_mask(self, rows: np.ndarray) -> np.ndarray:
        """Boolean ``(len(rows), n_items)``: which items each user has bought."""
        mask: np.ndarray = self.purchased[rows].toarray() > 0
        return mask

    def item_components(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """Neighbour scores of a set of items (``(n_items,)`` each): CF cosine to their mean
        factor, summed co-occurrence rows, content cosine to their mean embedding."""
        components: dict[str, np.ndarray] = {
            "pop": self._pop,
            "cf": self._item_factors_n @ self._item_factors_n[positions].mean(axis=0),
            "cooc": np.asarray(self.cooc[positions].sum(axis=0)).ravel(),
        }
        if self.embeddings is not None:
            components["content"] = self.embeddings @ self.embeddings[positions].mean(axis=0)
        else:
            components["content"] = np.zeros(len(self._items), dtype=np.float32)
        return components

    def _item_weights(self, cooc: bool = True) -> dict[str, float]:
        weights = {"cf": self.params.item_w_cf, "content": self.params.item_w_content}
        if cooc:
            weights["cooc"] = self.params.item_w_cooc
        return weights

    def _ranking(
        self,
        scores: np.ndarray,
        n: int,
        exclude: Collection[str],
        reason: str | Mapping[str, np.ndarray],
        blocked: np.ndarray | None = None,
    ) -> Ranking:
        """Top ``n`` of ``scores`` without the ``exclude`` ids and ``blocked`` positions.

        ``reason`` is one string, or the :func:`weighted` components: each item then gets the
        reason of the component that contributed most to its score.
        """
        scores = np.array(scores, dtype=np.float64)
        scores[self.item_index(exclude)] = -np.inf
        if blocked is not None:
            scores[blocked] = -np.inf
        top = top_indices(scores, n)
        top = top[np.isfinite(scores[top])]
        if isinstance(reason, str):
            return [(self._item_ids[i], float(scores[i]), reason) for i in top]
        names = list(reason)
        parts = np.stack([np.broadcast_to(reason[name], scores.shape)[top] for name in names])
        return [
            (self._item_ids[i], float(scores[i]), REASONS[names[best]])
            for i, best in zip(top, parts.argmax(axis=0), strict=True)
        ]

    # -- serving -------------------------------------------------------------------------

    def recommend_for_user(
        self,
        user_id: str,
        n: int,
        exclude: Collection[str] = (),
        session_items: Sequence[str] = (),
        allow_repeats: bool = True,
    ) -> Ranking:
        """Personal recommendations, pulled towards neighbours of this session's items (which
        are themselves left out, as they are already on the visitor's screen).

        ``allow_repeats=False`` leaves out everything the user bought before. An unknown user
        gets neighbours of the session items, else popular items.
        """
        row = self._user_index.get(user_id)
        if row is None:
            return self.recommend_for_items(session_items, n, exclude)
        weights = self.params.user_weights(allow_repeats)
        components = {
            name: scores[0] if scores.ndim == 2 else scores
            for name, scores in self.user_components(np.array([row]), weights).items()
        }
        session = self.item_index(session_items)
        if len(session) and self.params.w_session:
            components["session"] = blend(self.item_components(session), self._item_weights())
            weights["session"] = self.params.w_session
        parts = weighted(components, weights)
        return self._ranking(
            total(parts),
            n,
            [*exclude, *session_items],
            parts,
            blocked=None if allow_repeats else self.purchased[row].indices,
        )

    def recommend_for_items(
        self, item_ids: Sequence[str], n: int, exclude: Collection[str] = ()
    ) -> Ranking:
        """For an anonymous visitor: neighbours of the items seen in this session (CF,
        co-occurrence and content); popular items when none of them is known."""
        positions = self.item_index(item_ids)
        if not len(positions):
            return self.popular(n, exclude)
        scores = blend(self.item_components(positions), self._item_weights())
        return self._ranking(scores, n, [*exclude, *item_ids], REASONS["session"])

    def similar_items(self, item_id: str, n: int, exclude: Collection[str] = ()) -> Ranking:
        """Items like this one: CF similarity blended with content similarity. A cold-start
        item (no interactions, so zero factors) gets content similarity alone. Unknown: []."""
        positions = self.item_index([item_id])
        if not len(positions):
            return []
        scores = blend(self.item_components(positions), self._item_weights(cooc=False))
        return self._ranking(scores, n, [*exclude, item_id], "similar item")

    def bought_together(
        self, item_ids: Sequence[str], n: int, exclude: Collection[str] = ()
    ) -> Ranking:
        """Items bought in the same baskets as these, topped up with similar items when the
        baskets do not give ``n``."""
        positions = self.item_index(item_ids)
        if not len(positions):
            return []
        together = np.asarray(self.cooc[positions].sum(axis=0)).ravel()
        skip = [*exclude, *item_ids]
        ranking = self._ranking(
            np.where(together > 0, together, -np.inf), n, skip, "bought together"
        )
        if len(ranking) < n:
            seen = [item for item, _, _ in ranking]
            similar = blend(self.item_components(positions), self._item_weights(cooc=False))
            ranking += self._ranking(similar, n - len(ranking), [*skip, *seen], "similar item")
        return ranking

    def trending(
        self, n: int, exclude: Collection[str] = (), category: str | None = None
    ) -> Ranking:
        """Most customers in the last ``trending_days`` of the data (ties: all-time
        popularity), optionally within one category."""
        scores = blend({"pop": self._pop, "trend": self._trend}, {"trend": 1.0})
        other = np.nonzero(self._categories != category)[0] if category else None
        return self._ranking(scores, n, exclude, "trending", blocked=other)

    def popular(self, n: int, exclude: Collection[str] = ()) -> Ranking:
        """The non-personal part of the blend (trending and all-time popularity): the answer
        for a visitor we know nothing about."""
        weights = self.params.user_weights()
        weights = {"trend": weights["trend"], "pop": weights["pop"]}
        scores = blend({"pop": self._pop, "trend": self._trend}, weights)
        return self._ranking(scores, n, exclude, "popular")

    def search(self, query_embedding: np.ndarray, n: int, exclude: Collection[str] = ()) -> Ranking:
        """Products whose text embedding is closest to the query's (the caller embeds it)."""
        if self.embeddings is None:
            return []
        scores = self.embeddings @ np.asarray(query_embedding, dtype=np.float32).ravel()
        return self._ranking(scores, n, exclude, "matches your search")

    def buy_again(self, user_id: str, n: int) -> Ranking:
        """The user's own purchases, most often and most recently bought first."""
        row = self._user_index.get(user_id)
        if row is None:
            return []
        history = self.purchased[row]
        scores = np.full(len(self._items), -np.inf)
        scores[history.indices] = history.data
        return self._ranking(scores, n, (), REASONS["buy_again"])

    # -- artifacts -----------------------------------------------------------------------

    def save(self, directory: Path, metrics: Mapping[str, Any] | None = None) -> None:
        """Write ``arrays.npz`` (plain arrays, no pickles) and ``meta.json`` to ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {
            "item_ids": self._items,
            "item_categories": self._categories,
            "user_ids": self._user_ids,
            "user_factors": self.user_factors,
            "item_factors": self.item_factors,
            "popularity": self.popularity,
            "trending": self.trending_counts,
        }
        if self.embeddings is not None:
            arrays["embeddings"] = self.embeddings
        for name in ("confidence", "purchased", "cooc"):
            matrix: sp.csr_matrix = getattr(self, name)
            arrays[f"{name}_data"] = matrix.data
            arrays[f"{name}_indices"] = matrix.indices
            arrays[f"{name}_indptr"] = matrix.indptr
            arrays[f"{name}_shape"] = np.asarray(matrix.shape)
        np.savez(directory / ARRAYS_FILE, **arrays)
        meta = self.meta
        if metrics is not None:
            meta["metrics"] = dict(metrics)
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> HybridRecommender:
        """Read an artifact written by :meth:`save` (refuses other format versions)."""
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{directory}: artifact format {meta.get('format_version')!r}, "
                f"this code reads {FORMAT_VERSION}"
            )
        with np.load(directory / ARRAYS_FILE, allow_pickle=False) as arrays:

            def matrix(name: str) -> sp.csr_matrix:
                return sp.csr_matrix(
                    (arrays[f"{name}_data"], arrays[f"{name}_indices"], arrays[f"{name}_indptr"]),
                    shape=tuple(arrays[f"{name}_shape"]),
                )

            return cls(
                item_ids=arrays["item_ids"],
                item_categories=arrays["item_categories"],
                user_ids=arrays["user_ids"],
                user_factors=arrays["user_factors"],
                item_factors=arrays["item_factors"],
                confidence=matrix("confidence"),
                purchased=matrix("purchased"),
                cooc=matrix("cooc"),
                popularity=arrays["popularity"],
                trending=arrays["trending"],
                embeddings=arrays.get("embeddings"),
                params=RecommenderParams.from_dict(meta["params"]),
                meta=meta,
            )


def product_embeddings(products: Sequence[Product], cache_dir: Path | None = None) -> np.ndarray:
    """Content embeddings of ``products`` (``encode_texts`` of ``Product.text``), kept in
    ``cache_dir`` while the texts match (see :func:`journeygate.encoder.encode_cached`)."""
    from journeygate.encoder import encode_cached

    return encode_cached([p.text for p in products], cache_dir)
