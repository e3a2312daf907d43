"""Session fixtures for the sentiment tests: the real labelled sentences, their embeddings
(cached in var/cache/sentiment by content, like `journeygate train-sentiment`), a held-out
split, one model trained on the rest and published as an artifact, and the same artifact
marked with an older format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jg_sentiment.data import Labelled, load_sentences
from jg_sentiment.model import META_FILE, Anchors, SentimentModel, encoder_precision, read_meta
from jg_sentiment.settings import EMBEDDING_CACHE
from jg_sentiment.training import encode_anchors
from journeygate import artifacts
from journeygate.config import PROJECT_ROOT
from journeygate.encoder import encode_cached

HELD_OUT_SHARE = 0.2


@pytest.fixture(scope="session")
def sentences() -> Labelled:
    return load_sentences()


@pytest.fixture(scope="session")
def embeddings(sentences: Labelled) -> np.ndarray:
    return encode_cached(list(sentences.texts), PROJECT_ROOT / EMBEDDING_CACHE, encoder_precision())


@pytest.fixture(scope="session")
def anchors() -> Anchors:
    return encode_anchors()


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
    anchors: Anchors,
    split: tuple[np.ndarray, np.ndarray],
) -> SentimentModel:
    """Fitted once per session on the 80% training share (about ten seconds)."""
    train = split[0]
    positive = np.asarray([sentences.labels[i] == "positive" for i in train])
    texts = [sentences.texts[i] for i in train]
    domains = [sentences.sources[i] for i in train]
    return SentimentModel.fit(texts, positive, embeddings[train], anchors, domains)


@pytest.fixture(scope="session")
def artifact_root(trained: SentimentModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained model published as the plugin and the command line find it."""
    root = tmp_path_factory.mktemp("sentiment-models")
    artifacts.publish_artifact(root, lambda directory: trained.save(directory, {"test": True}))
    return root


@pytest.fixture(scope="session")
def stale_root(trained: SentimentModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A published model whose ``meta.json`` says format 1, as an older release wrote it."""
    root = tmp_path_factory.mktemp("sentiment-stale")

    def write(directory: Path) -> None:
        trained.save(directory)
        meta = {**read_meta(directory), "format": 1}
        (directory / META_FILE).write_text(json.dumps(meta), encoding="utf-8")

    artifacts.publish_artifact(root, write)
    return root
