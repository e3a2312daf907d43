"""The labelled sentences the sentiment model learns from, and labelled feedback files.

The bundled training data (``data/sentiment/``, see its README for source and licence) is the
UCI "Sentiment Labelled Sentences" set: 1,000 review sentences from each of amazon.com (cell
phones), imdb.com and yelp.com, half positive, half negative, one ``text<TAB>0|1`` per line.
``journeygate score-sentiment`` reads any file of ``text<TAB>label`` lines the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from journeygate.config import PROJECT_ROOT

DATA_DIR = PROJECT_ROOT / "data" / "sentiment"
SOURCES = ("amazon", "imdb", "yelp")
_FILES = {
    "amazon": "amazon_cells_labelled.txt",
    "imdb": "imdb_labelled.txt",
    "yelp": "yelp_labelled.txt",
}
LABEL_NAMES = {
    "1": "positive",
    "positive": "positive",
    "pos": "positive",
    "0": "negative",
    "negative": "negative",
    "neg": "negative",
    "mixed": "mixed",
    "neutral": "mixed",
}


@dataclass(frozen=True, slots=True)
class Labelled:
    """Texts with their labels (``positive``, ``negative`` or ``mixed``) and their source."""

    texts: tuple[str, ...]
    labels: tuple[str, ...]
    sources: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)


def read_labelled(path: Path, source: str | None = None) -> Labelled:
    """``text<TAB>label`` lines; a label is 1/0, positive/negative (pos/neg) or mixed/neutral.

    Raises ``ValueError`` naming the line when one has no tab or an unknown label.
    """
    texts: list[str] = []
    labels: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            text, tab, raw_label = line.rstrip("\r\n").rpartition("\t")
            label = LABEL_NAMES.get(raw_label.strip().lower())
            if not tab or not text.strip() or label is None:
                raise ValueError(
                    f"{path}:{number}: expected 'text<TAB>label' with a label of 1/0, "
                    f"positive/negative or mixed; got {line.strip()[:80]!r}"
                )
            texts.append(text.strip())
            labels.append(label)
    name = source or path.stem
    return Labelled(tuple(texts), tuple(labels), (name,) * len(texts))


def load_sentences(data_dir: Path = DATA_DIR) -> Labelled:
    """The three bundled sources, in the order of :data:`SOURCES`."""
    parts = [read_labelled(data_dir / _FILES[source], source) for source in SOURCES]
    return Labelled(
        tuple(text for part in parts for text in part.texts),
        tuple(label for part in parts for label in part.labels),
        tuple(source for part in parts for source in part.sources),
    )
