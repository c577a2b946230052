"""Starting weights for new 2-D models: a U-Net trained on varied synthetic scenes.

A painted image holds a few hundred labelled pixels, too few to learn what edges, ridges and
blobs look like from random weights. A new two-class 2-D model of the default shape therefore
starts from weights trained on :func:`~napari_unetseg.core.synthetic.varied_planes` (blobs
and cell walls, either polarity, blurred, tilted and noisy), output layer included, and the
painted image fine-tunes all of it. On the real development images this raised the mean Dice
of the 15 image-painting pairs from 0.784 to 0.807 (docs/benchmarks.md, twelfth session).

The file ships with the package (``_data/start_2d.safetensors``, tensors only) and is remade
with ``python scripts/make_starting_weights.py``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .config import ModelConfig
from .errors import ConfigError
from .sample import DATA

STARTING_WEIGHTS_FILE = DATA / "start_2d.safetensors"

#: ``auto``: the starting weights where they fit the model, random weights elsewhere;
#: ``synthetic``: the starting weights, or a ConfigError where they do not fit; ``random``.
Start = Literal["auto", "synthetic", "random"]

#: What ``ModelConfig.started_from`` says for a model that began from the starting weights.
STARTED_FROM_SYNTHETIC = "synthetic scenes"

#: How the starting weights were made (scripts/make_starting_weights.py).
PRETRAINING_PLANES = 64
PRETRAINING_EPOCHS = 40
PRETRAINING_SEED = 123

_FIRST_LAYER = "inc.double_conv.0.weight"


def why_starting_weights_do_not_fit(config: ModelConfig) -> str | None:
    """None when the starting weights fit ``config``; otherwise the reason, for a message."""
    default = ModelConfig.native(config.in_channels, 2)
    if config.spatial_dims != 2:
        return "they are for 2-D models"
    if config.task != "semantic" or config.n_classes != 2:
        return "they are for two-class models (background and one class)"
    shape = ("encoder_channels", "decoder_channels", "decoder_mid_channels", "upsampling")
    if any(getattr(config, name) != getattr(default, name) for name in shape) or config.conv_bias:
        return "they are for the default width and depth (base_width=16, depth=4, bilinear)"
    if config.members != 1:
        return "they are for a model of one U-Net (members=1)"
    if config.normalization.method != "percentile":
        return "they were trained on images normalised by percentiles"
    return None


def wants_starting_weights(config: ModelConfig, start: Start) -> bool:
    """Whether a new model with ``config`` begins from the starting weights (``start``
    already checked to be a :data:`Start`)."""
    if start == "random":
        return False
    reason = why_starting_weights_do_not_fit(config)
    if reason is not None and start == "synthetic":
        raise ConfigError(f"start='synthetic' cannot be used for this model: {reason}.")
    return reason is None


def load_starting_weights(model: nn.Module, in_channels: int) -> None:
    """Copy the starting weights into ``model``, a fitting two-class 2-D U-Net.

    The file was trained on one channel; for more, each channel gets an equal share of the
    first layer, so an image whose channels are alike starts as its grey version would.
    """
    from safetensors.torch import load_file

    state = load_file(STARTING_WEIGHTS_FILE)  # tensors only: nothing in it can run
    first = state[_FIRST_LAYER]
    state[_FIRST_LAYER] = first.repeat(1, in_channels, 1, 1) / in_channels
    with torch.no_grad():
        model.load_state_dict(state)
