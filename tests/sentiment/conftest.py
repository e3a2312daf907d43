"""Session fixtures for the sentiment tests: the real labelled sentences, their embeddings
(cached in var/cache/sentiment by content, like `journeygate train-sentiment`), a held-out
split, and one model trained on the rest and published as an artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jg_sentiment.data import Labelled, load_sentences
from jg_sentiment.model import SentimentModel
from jg_sentiment.settings import EMBEDDING_CACHE
from jg_sentiment.training import anchor_direction
from journeygate import artifacts
from journeygate.config import PROJECT_ROOT
from journeygate.encoder import encode_cached

HELD_OUT_SHARE = 0.2


@pytest.fixture(scope="session")
def sentences() -> Labelled:
    return load_sentences()


@pytest.fixture(scope="session")
def embeddings(sentences: Labelled) -> np.ndarray:
    return encode_cached(list(sentences.texts), PROJECT_ROOT / EMBEDDING_CACHE)


@pytest.fixture(scope="session")
def direction() -> np.ndarray:
    return anchor_direction()


@pytest.fixture(scope="session")
def split(sentences: Labelled) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out indexes: 20% of each source and label, chosen with a fixed seed."""
    from sklearn.model_selection import train_test_split

    strata = [f"{s}:{label}" for s, label in zip(sentences.sources, sentences.labels, strict=True)]
    train, test = train_test_split(
        np.arange(len(sentences)), test_size=HELD_OUT_SHARE, stratify=strata, random_state=7
    )
    return np.sort(train), np.sort(test)


def subset(data: Labelled, indexes: np.ndarray) -> Labelled:
    return Labelled(
        tuple(data.texts[i] for i in indexes),
        tuple(data.labels[i] for i in indexes),
        tuple(data.sources[i] for i in indexes),
    )


@pytest.fixture(scope="session")
def held_out(sentences: Labelled, split: tuple[np.ndarray, np.ndarray]) -> Labelled:
    return subset(sentences, split[1])


@pytest.fixture(scope="session")
def trained(
    sentences: Labelled,
    embeddings: np.ndarray,
    direction: np.ndarray,
    split: tuple[np.ndarray, np.ndarray],
) -> SentimentModel:
    """Fitted once per session on the 80% training share (about ten seconds)."""
    train = split[0]
    positive = np.asarray([sentences.labels[i] == "positive" for i in train])
    texts = [sentences.texts[i] for i in train]
    return SentimentModel.fit(texts, positive, embeddings[train], direction)


@pytest.fixture(scope="session")
def artifact_root(trained: SentimentModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained model published as the plugin and the command line find it."""
    root = tmp_path_factory.mktemp("sentiment-models")
    artifacts.publish_artifact(root, lambda directory: trained.save(directory, {"test": True}))
    return root
