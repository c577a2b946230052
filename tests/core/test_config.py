import json

import pytest

from napari_unetseg.core import ConfigError, ModelConfig, PredictConfig, TrainConfig
from napari_unetseg.core.config import NormalizationConfig


def test_native_layout_is_the_pytorch_unet_shape_scaled_down():
    config = ModelConfig.native(1, 2, base_width=16, depth=4)
    assert config.encoder_channels == (16, 32, 64, 128, 128)
    assert config.decoder_channels == (64, 32, 16, 16)
    assert config.min_size == 16
    transposed = ModelConfig.native(3, 4, base_width=8, depth=3, upsampling="transposed")
    assert transposed.encoder_channels == (8, 16, 32, 64)
    assert transposed.decoder_channels == (32, 16, 8)


def test_object_models_always_have_three_outputs():
    assert ModelConfig.native(task="objects").n_classes == 3
    assert ModelConfig.native(task="objects").names == ("background", "interior", "boundary")
    with pytest.raises(ConfigError, match="exactly 3"):
        ModelConfig.native().replace(task="objects")


def test_model_config_json_round_trip():
    config = ModelConfig.native(
        2,
        3,
        class_names=("bg", "nucleus", "cytoplasm"),
        normalization=NormalizationConfig(low=2, high=98),
    ).replace(training={"steps": 5})
    again = ModelConfig.from_json(config.to_json())
    assert again == config
    assert json.loads(config.to_json())["normalization"]["low"] == 2


def test_unknown_settings_in_a_file_are_named():
    data = ModelConfig.native().to_dict() | {"flux_capacitor": 1}
    with pytest.raises(ConfigError, match="flux_capacitor"):
        ModelConfig.from_dict(data)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: TrainConfig(max_seconds=None, max_epochs=None), "time budget"),
        (lambda: TrainConfig(max_seconds=-1), "max_seconds"),
        (lambda: TrainConfig(mode="painted"), "mode"),
        (lambda: TrainConfig(loss="focal"), "loss"),
        (lambda: TrainConfig(learning_rate=2.0), "learning_rate"),
        (lambda: TrainConfig(validation_fraction=0.9), "validation_fraction"),
        (lambda: TrainConfig(patch_size=8), "patch_size"),
        (lambda: PredictConfig(tile_size=16), "tile_size"),
        (lambda: PredictConfig(overlap=-1), "overlap"),
        (lambda: PredictConfig(precision="int8"), "precision"),
        (lambda: NormalizationConfig(low=50, high=10), "percentiles"),
        (lambda: ModelConfig.native(in_channels=0), "in_channels"),
        (lambda: ModelConfig.native(depth=9), "depth"),
        (lambda: ModelConfig.native(n_classes=3, class_names=("a", "b")), "class_names"),
    ],
)
def test_invalid_settings_raise_a_clear_error(factory, message):
    with pytest.raises(ConfigError, match=message):
        factory()


def test_small_tiles_get_a_proportionate_overlap():
    assert PredictConfig(tile_size=64).overlap == 16
    assert PredictConfig(tile_size=512, overlap=40).overlap == 40
