"""The persona model: feature transform, scaler, named centroids; saved as one JSON file.

Plain numbers only (no pickles), so an artifact can be read, diffed and loaded anywhere.
Assigning a persona is a nearest-centroid search in the standardised feature space; a live
profile lacks some features (see :data:`jg_personas.features.FEATURES`), so its distance is
measured over the features it has.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MODEL_FILE = "personas.json"
FORMAT_VERSION = 1


def log_transform(values: np.ndarray, log: Sequence[bool] | np.ndarray) -> np.ndarray:
    """``log1p`` of the columns flagged in ``log`` (negative values count as 0), the others
    unchanged: the step before standardising."""
    return np.asarray(np.where(log, np.log1p(np.maximum(values, 0.0)), values), dtype=float)


@dataclass(frozen=True, slots=True)
class Persona:
    """One cluster: ``id`` (a slug, what profiles and segments carry), ``name`` (for
    people), its standardised centroid, and its customers' count and feature medians."""

    id: str
    name: str
    centroid: tuple[float, ...]
    customers: int
    medians: Mapping[str, float]


@dataclass(frozen=True)
class PersonaModel:
    features: tuple[str, ...]
    log: tuple[bool, ...]  # per feature: log1p before standardising
    mean: np.ndarray
    scale: np.ndarray
    personas: tuple[Persona, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)
    centroids: np.ndarray = field(init=False, repr=False)  # personas x features

    def __post_init__(self) -> None:
        centroids = np.array([persona.centroid for persona in self.personas], dtype=float)
        object.__setattr__(self, "centroids", centroids)

    @property
    def version(self) -> str | None:
        """The artifact directory's name once saved and loaded (None before)."""
        return self.meta.get("version")

    def get(self, persona_id: str) -> Persona | None:
        return next((persona for persona in self.personas if persona.id == persona_id), None)

    def standardise(self, values: np.ndarray) -> np.ndarray:
        """Raw feature values (rows x ``features``) to the clustering space."""
        return np.asarray((log_transform(values, self.log) - self.mean) / self.scale)

    def assign(self, table: pd.DataFrame) -> np.ndarray:
        """The persona index of every row of a feature table (all features present)."""
        z = self.standardise(table.loc[:, list(self.features)].to_numpy(dtype=float))
        distances = ((z[:, None, :] - self.centroids[None, :, :]) ** 2).sum(axis=2)
        return np.asarray(distances.argmin(axis=1))

    def nearest(self, values: Mapping[str, float]) -> Persona | None:
        """The persona whose centroid is nearest over the features ``values`` has (None when
        it has none of them)."""
        used = [i for i, name in enumerate(self.features) if name in values]
        if not used:
            return None
        raw = np.array([values[self.features[i]] for i in used], dtype=float)
        transformed = log_transform(raw, [self.log[i] for i in used])
        z = (transformed - self.mean[used]) / self.scale[used]
        distances = ((self.centroids[:, used] - z) ** 2).sum(axis=1)
        return self.personas[int(distances.argmin())]

    def save(self, directory: Path) -> None:
        body = {
            "format_version": FORMAT_VERSION,
            **{key: value for key, value in self.meta.items() if key != "version"},
            "features": list(self.features),
            "log1p": list(self.log),
            "scaler": {"mean": self.mean.tolist(), "scale": self.scale.tolist()},
            "personas": [
                {
                    "id": p.id,
                    "name": p.name,
                    "centroid": list(p.centroid),
                    "customers": p.customers,
                    "medians": dict(p.medians),
                }
                for p in self.personas
            ],
        }
        (directory / MODEL_FILE).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> PersonaModel:
        """Read an artifact written by :meth:`save` (refuses other format versions)."""
        body = json.loads((directory / MODEL_FILE).read_text(encoding="utf-8"))
        if body.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{directory}: persona model format {body.get('format_version')!r}, "
                f"expected {FORMAT_VERSION}"
            )
        reserved = ("format_version", "features", "log1p", "scaler", "personas")
        meta = {key: value for key, value in body.items() if key not in reserved}
        return cls(
            features=tuple(body["features"]),
            log=tuple(bool(flag) for flag in body["log1p"]),
            mean=np.asarray(body["scaler"]["mean"], dtype=float),
            scale=np.asarray(body["scaler"]["scale"], dtype=float),
            personas=tuple(
                Persona(
                    id=p["id"],
                    name=p["name"],
                    centroid=tuple(p["centroid"]),
                    customers=int(p["customers"]),
                    medians=p["medians"],
                )
                for p in body["personas"]
            ),
            meta={**meta, "version": directory.name},
        )
