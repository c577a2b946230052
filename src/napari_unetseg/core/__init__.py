"""The Qt-free core of napari-unetseg: model, training, prediction, weights I/O.

Everything a console or batch user needs is importable from here::

    from napari_unetseg.core import Segmenter, TrainConfig
"""

from .config import ModelConfig, NormalizationConfig, PredictConfig, TrainConfig
from .devices import available_devices, select_device
from .errors import ConfigError, InputError, UnetSegError, UnsafeWeightsError, WeightsFileError
from .predict import Prediction, PredictProgress
from .segmenter import Segmenter
from .train import EpochDone, StepDone, TrainingDone, TrainingHistory, TrainingStarted

__all__ = [
    "ConfigError",
    "EpochDone",
    "InputError",
    "ModelConfig",
    "NormalizationConfig",
    "PredictConfig",
    "PredictProgress",
    "Prediction",
    "Segmenter",
    "StepDone",
    "TrainConfig",
    "TrainingDone",
    "TrainingHistory",
    "TrainingStarted",
    "UnetSegError",
    "UnsafeWeightsError",
    "WeightsFileError",
    "available_devices",
    "select_device",
]
