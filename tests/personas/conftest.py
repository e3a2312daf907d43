"""Session fixtures for the persona tests: the real bundled Online Retail sample, its customers'
features, and a persona model fitted on them and published as an artifact (once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jg_personas.clustering import fit_personas
from jg_personas.features import customer_features
from jg_personas.model import PersonaModel
from journeygate.artifacts import publish_artifact
from journeygate.config import PROJECT_ROOT
from journeygate.retail_data import read_online_retail

SAMPLE = PROJECT_ROOT / "data" / "sample" / "online_retail_sample.csv.gz"


@pytest.fixture(scope="session")
def retail_frame() -> pd.DataFrame:
    return read_online_retail(SAMPLE)


@pytest.fixture(scope="session")
def features(retail_frame: pd.DataFrame) -> pd.DataFrame:
    return customer_features(retail_frame)


@pytest.fixture(scope="session")
def fitted(features: pd.DataFrame) -> tuple[PersonaModel, np.ndarray]:
    return fit_personas(features)


@pytest.fixture(scope="session")
def persona_artifacts(
    tmp_path_factory: pytest.TempPathFactory, fitted: tuple[PersonaModel, np.ndarray]
) -> Path:
    """A directory with the fitted model published in it (``CURRENT`` points at it)."""
    root = tmp_path_factory.mktemp("personas")
    publish_artifact(root, fitted[0].save)
    return root
