"""Training the sentiment model and the ``journeygate train-sentiment`` / ``score-sentiment``
commands. Artifacts are versioned like the recommender's (:mod:`journeygate.artifacts`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from jg_sentiment.data import DATA_DIR, Labelled, load_sentences, read_labelled
from jg_sentiment.evaluation import Progress, Report, evaluate
from jg_sentiment.model import (
    POLARITY_ANCHORS,
    Anchors,
    SentimentModel,
    encoder_precision,
    read_meta,
    stale_because,
)
from jg_sentiment.scoring import LABELS, FeedbackScorer
from jg_sentiment.settings import EMBEDDING_CACHE, PLUGIN_NAME, SentimentSettings
from journeygate import artifacts
from journeygate.config import AppConfig
from journeygate.encoder import encode_cached, encode_texts


def encode_anchors() -> Anchors:
    """The embeddings of :data:`POLARITY_ANCHORS` (eight short texts); the model keeps them."""
    return Anchors(
        encode_texts(POLARITY_ANCHORS["positive"], precision=encoder_precision()),
        encode_texts(POLARITY_ANCHORS["negative"], precision=encoder_precision()),
    )


def train(
    data: Labelled,
    out_root: Path,
    cache_dir: Path | None = None,
    evaluate_first: bool = True,
    progress: Progress | None = None,
) -> tuple[Path, Report | None]:
    """Fit on all of ``data`` and publish the artifact; with ``evaluate_first`` the held-out
    report (in-domain and cross-domain) is computed first and stored in ``meta.json``."""
    say = progress or (lambda _message: None)
    say(f"embedding {len(data):,} sentences")
    embeddings = encode_cached(list(data.texts), cache_dir, encoder_precision())
    anchors = encode_anchors()
    report = None
    if evaluate_first:
        report = evaluate(data, embeddings, anchors, progress=say)
    say("fitting on all sentences")
    positive = np.asarray([label == "positive" for label in data.labels])
    model = SentimentModel.fit(list(data.texts), positive, embeddings, anchors, data.sources)
    metrics = report.summary() if report is not None else None
    path = artifacts.publish_artifact(out_root, lambda directory: model.save(directory, metrics))
    return path, report


def balanced_accuracy(truth: list[str], predicted: list[str]) -> float:
    """Mean recall over the labels present in ``truth``."""
    recalls = []
    for label in dict.fromkeys(truth):
        hits = [p == label for t, p in zip(truth, predicted, strict=True) if t == label]
        recalls.append(sum(hits) / len(hits))
    return sum(recalls) / len(recalls) if recalls else 0.0


def load_scorer(config: AppConfig, settings: SentimentSettings) -> FeedbackScorer:
    """A scorer for the served artifact; ``ValueError`` when none was trained yet."""
    path = artifacts.latest_artifact(config.resolve_path(settings.artifacts))
    if path is None:
        raise ValueError(
            f"no sentiment model in {settings.artifacts}: run `journeygate train-sentiment`"
        )
    return FeedbackScorer(SentimentModel.load(path), settings.scoring, settings.themes)


# -- command line --------------------------------------------------------------------------


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _settings(config: AppConfig) -> SentimentSettings:
    return SentimentSettings.from_mapping(config.plugin_config(PLUGIN_NAME).settings)


def add_arguments_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, default=DATA_DIR, help="folder of the three labelled files"
    )
    parser.add_argument("--out", type=Path, help="artifact root (plugin.sentiment.artifacts)")
    parser.add_argument(
        "--no-evaluate", action="store_true", help="skip the held-out evaluation (faster)"
    )
    parser.add_argument(
        "--if-stale",
        action="store_true",
        help="train only when no model this host can serve is published (make run)",
    )


def train_command(args: argparse.Namespace, config: AppConfig) -> int:
    try:
        settings = _settings(config)
        data = load_sentences(args.data)
    except ValueError as error:
        print(f"journeygate: {error}", file=sys.stderr)
        return 2
    out_root = args.out or config.resolve_path(settings.artifacts)
    current = artifacts.latest_artifact(out_root)
    if args.if_stale and current is not None and stale_because(read_meta(current)) is None:
        print(f"{out_root / artifacts.CURRENT} -> {current.name} is current; not retrained")
        return 0
    started = time.perf_counter()
    path, report = train(
        data,
        out_root,
        config.resolve_path(EMBEDDING_CACHE),
        evaluate_first=not args.no_evaluate,
        progress=_progress,
    )
    if report is not None:
        print(report.table())
    seconds = time.perf_counter() - started
    print(f"{out_root / artifacts.CURRENT} -> {path.name} (trained in {seconds:.1f} s)")
    return 0


def add_arguments_score(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", type=Path, help="text<TAB>label lines (1/0, positive/negative/mixed)"
    )
    parser.add_argument(
        "--show", type=int, default=0, metavar="N", help="also print the first N misclassified"
    )


def score_command(args: argparse.Namespace, config: AppConfig) -> int:
    try:
        settings = _settings(config)
        labelled = read_labelled(args.file)
        scorer = load_scorer(config, settings)
    except ValueError as error:
        print(f"journeygate: {error}", file=sys.stderr)
        return 2
    truth = list(labelled.labels)
    scores = scorer.score_many(labelled.texts)
    predicted = [score.label for score in scores]
    correct = sum(t == p for t, p in zip(truth, predicted, strict=True))
    print(f"texts              {len(truth)}")
    print(f"accuracy           {correct / len(truth) if truth else 0.0:.3f}")
    print(f"balanced accuracy  {balanced_accuracy(truth, predicted):.3f}")
    counts = ", ".join(f"{label} {predicted.count(label)}" for label in LABELS)
    print(f"predicted          {counts}")
    wrong = [
        (text, t, score)
        for text, t, score in zip(labelled.texts, truth, scores, strict=True)
        if score.label != t
    ]
    for text, t, score in wrong[: args.show]:
        print(f"  {t:>8} -> {score.label:<8} {score.score:+.2f}  {text[:100]}")
    return 0
