"""Shared fixtures: small synthetic scenes made on the fly (nothing is downloaded)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def nuclei_small():
    from napari_unetseg.core.synthetic import nuclei_scene

    return nuclei_scene((128, 128), seed=3)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
