"""Feedback longer and more mixed than one sentence: scored from its sentences, with a
mixed label for mixed messages, and themes."""

from __future__ import annotations

import random

import pytest

from jg_sentiment.scoring import FeedbackScorer, ScoringSettings, aggregate, split_sentences
from jg_sentiment.settings import SentimentSettings


@pytest.fixture(scope="module")
def scorer(trained):
    return FeedbackScorer(trained)


def reviews(held_out, positives: int, negatives: int, count: int, seed: int) -> list[str]:
    """``count`` long reviews, each made of real held-out sentences of one source."""
    rng = random.Random(seed)
    made = []
    for index in range(count):
        source = ("amazon", "imdb", "yelp")[index % 3]
        pool = {
            label: [
                t
                for t, lab, s in zip(held_out.texts, held_out.labels, held_out.sources, strict=True)
                if s == source and lab == label
            ]
            for label in ("positive", "negative")
        }
        chosen = rng.sample(pool["positive"], positives) + rng.sample(pool["negative"], negatives)
        rng.shuffle(chosen)
        made.append(" ".join(text if text[-1] in ".!?" else text + "." for text in chosen))
    return made


def test_sentences_and_contrast_clauses_are_split():
    text = "Love the colour, but it fell apart in a week. Shipping was fast!\nWould buy again"
    assert split_sentences(text) == [
        "Love the colour",
        "but it fell apart in a week.",
        "Shipping was fast!",
        "Would buy again",
    ]
    assert split_sentences("  ...  ") == []


def test_aggregate_calls_two_sided_or_lukewarm_texts_mixed():
    settings = ScoringSettings()  # neutral band 0.2, mixed ratio 0.5
    assert aggregate([0.95, 0.9, 0.8], settings)[1] == "positive"
    assert aggregate([-0.9, -0.7], settings)[1] == "negative"
    score, label = aggregate([0.99, -0.8], settings)  # praise first, then a real problem
    assert label == "mixed" and -1 <= score <= 1
    assert aggregate([0.95] * 9 + [-0.5], settings)[1] == "positive"  # one quibble
    assert aggregate([0.1, -0.05], settings)[1] == "mixed"  # lukewarm
    assert aggregate([0.0], settings) == (0.0, "mixed")


def test_long_reviews_are_scored_from_every_sentence(scorer, held_out):
    (review,) = reviews(held_out, positives=30, negatives=0, count=1, seed=1)
    result = scorer.score_many([review])[0]
    assert len(result.sentences) >= 30  # nothing truncated
    assert result.label == "positive" and result.score > 0.5


def test_long_real_reviews_get_the_right_label(scorer, held_out):
    positive = reviews(held_out, 5, 0, 15, seed=2)
    negative = reviews(held_out, 0, 5, 15, seed=3)
    mixed = reviews(held_out, 3, 3, 15, seed=4)
    labels = {
        name: [r.label for r in scorer.score_many(texts)]
        for name, texts in (("positive", positive), ("negative", negative), ("mixed", mixed))
    }
    assert labels["positive"].count("positive") >= 13
    assert labels["negative"].count("negative") >= 13
    # half praise, half complaint: mostly mixed, and not called positive by default
    assert labels["mixed"].count("mixed") >= 10
    assert labels["mixed"].count("positive") <= 2


def test_a_mixed_message_is_not_called_positive(scorer):
    result = scorer.score_many(["Love the colour, but it fell apart in a week."])[0]
    assert result.label == "mixed"
    assert "quality" in result.themes


def test_themes_name_what_the_feedback_is_about(scorer):
    delivery, service, plain = scorer.score_many(
        [
            "The parcel arrived two weeks late and the courier never called.",
            "Customer support was rude and never answered my emails about the refund.",
            "I am happy.",
        ]
    )
    assert delivery.themes[0] == "delivery" and delivery.label == "negative"
    assert service.themes[0] == "service" and service.label == "negative"
    assert plain.themes == ()


async def test_concurrent_feedback_shares_forward_passes(trained):
    import asyncio

    scorer = FeedbackScorer(trained, max_wait_ms=5.0)
    texts = [f"Review {i}: the strap broke after {i} days. Great screen though!" for i in range(16)]
    try:
        results = await asyncio.gather(*(scorer.score(text) for text in texts))
    finally:
        await scorer.close()
    assert [r.label for r in results] == [
        r.label for r in FeedbackScorer(trained).score_many(texts)
    ]
    assert scorer.batcher.stats.batches < len(texts)  # sentences of many feedbacks per pass


def test_settings_take_strings_from_the_environment_and_name_a_bad_key():
    settings = SentimentSettings.from_mapping({"torch_threads": "2", "max_wait_ms": "0"})
    assert settings.torch_threads == 2 and settings.max_wait_ms == 0.0
    assert SentimentSettings.from_mapping({}).torch_threads == 1
    for bad in ({"torch_threads": 0}, {"torch_threads": 1.5}, {"torch_threads": "many"}):
        with pytest.raises(ValueError, match=r"^plugin\.sentiment\.torch_threads: "):
            SentimentSettings.from_mapping(bad)
