"""Session fixtures for the recommender tests: a slice of the real bundled Online Retail sample,
its product embeddings (encoded once per session) and a model fitted on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jg_recommender.evaluation import load_interactions
from jg_recommender.model import HybridRecommender, RecommenderParams, product_embeddings
from journeygate.catalog import Product
from journeygate.config import PROJECT_ROOT
from journeygate.retail_data import purchases, read_online_retail

SAMPLE = PROJECT_ROOT / "data" / "sample" / "online_retail_sample.csv.gz"
SLICE_PRODUCTS = 1000


@pytest.fixture(scope="session")
def sample_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every line of the bundled sample whose product is among the 1,000 bought by the most
    customers (three quarters of the purchases), in the Online Retail layout: real data, with a
    catalog small enough to embed in a few seconds."""
    frame = read_online_retail(SAMPLE)
    lines = purchases(frame)
    customers = lines.groupby("StockCode")["CustomerID"].nunique()
    top = customers.sort_values(ascending=False, kind="stable").index[:SLICE_PRODUCTS]
    path = tmp_path_factory.mktemp("retail") / "sample_slice.csv.gz"
    frame.loc[frame["StockCode"].isin(top)].to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def embedding_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="session")
def sample_data(sample_slice: Path) -> tuple[pd.DataFrame, list[Product]]:
    return load_interactions(sample_slice)


@pytest.fixture(scope="session")
def sample_embeddings(
    sample_data: tuple[pd.DataFrame, list[Product]], embedding_cache: Path
) -> np.ndarray:
    """Encoded once per session; later calls with the same products hit the cache."""
    return product_embeddings(sample_data[1], embedding_cache)


@pytest.fixture(scope="session")
def fitted(
    sample_data: tuple[pd.DataFrame, list[Product]], sample_embeddings: np.ndarray
) -> HybridRecommender:
    interactions, products = sample_data
    return HybridRecommender.fit(interactions, products, RecommenderParams(), sample_embeddings)
