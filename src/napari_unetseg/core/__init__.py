"""The Qt-free core of napari-unetseg: model, training, prediction, weights I/O.

Everything a console or batch user needs is importable from here::

    from napari_unetseg.core import Segmenter, TrainConfig

Names are loaded on first use, so ``napari_unetseg.core.synthetic`` (the sample data) does not
pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ModelConfig": "config",
    "NormalizationConfig": "config",
    "PredictConfig": "config",
    "TrainConfig": "config",
    "available_devices": "devices",
    "select_device": "devices",
    "ConfigError": "errors",
    "InputError": "errors",
    "UnetSegError": "errors",
    "TrustRequiredError": "errors",
    "UnsafeWeightsError": "errors",
    "WeightsFileError": "errors",
    "Prediction": "predict",
    "PredictProgress": "predict",
    "Segmenter": "segmenter",
    "EpochDone": "train",
    "PaintUpdated": "train",
    "StepDone": "train",
    "TrainingDone": "train",
    "TrainingHistory": "train",
    "TrainingStarted": "train",
    "PaintSuggestion": "uncertainty",
}

__all__ = [
    "ConfigError",
    "EpochDone",
    "InputError",
    "ModelConfig",
    "NormalizationConfig",
    "PaintSuggestion",
    "PaintUpdated",
    "PredictConfig",
    "PredictProgress",
    "Prediction",
    "Segmenter",
    "StepDone",
    "TrainConfig",
    "TrainingDone",
    "TrainingHistory",
    "TrainingStarted",
    "TrustRequiredError",
    "UnetSegError",
    "UnsafeWeightsError",
    "WeightsFileError",
    "available_devices",
    "select_device",
]

if TYPE_CHECKING:
    from .config import ModelConfig, NormalizationConfig, PredictConfig, TrainConfig
    from .devices import available_devices, select_device
    from .errors import (
        ConfigError,
        InputError,
        TrustRequiredError,
        UnetSegError,
        UnsafeWeightsError,
        WeightsFileError,
    )
    from .predict import Prediction, PredictProgress
    from .segmenter import Segmenter
    from .train import (
        EpochDone,
        PaintUpdated,
        StepDone,
        TrainingDone,
        TrainingHistory,
        TrainingStarted,
    )
    from .uncertainty import PaintSuggestion


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
