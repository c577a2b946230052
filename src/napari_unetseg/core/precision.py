"""Lower precision only where it is proven for the model at hand.

``precision="auto"`` would use bfloat16 (or float16 on some GPUs) wherever it is faster. How
much that changes the result depends on the weights: on our own compact models labels agree
with float32 on over 99.5 % of pixels, but on imported classic Pytorch-UNet weights
probabilities moved by up to 0.1 and 1.6 % of labels changed. So before the first prediction
with a model's current weights, the first tile (its top-left 256², see :data:`PROBE_SIZE`)
is computed both ways; the lower precision is kept only when the labels agree on at least
:data:`LABEL_AGREEMENT` of the pixels and all but :data:`PROBABILITY_OUTLIERS` of the
probabilities are within :data:`PROBABILITY_TOLERANCE`. The verdict is remembered until the
weights change (a training step, a load).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Hashable
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import ModelConfig, PredictConfig
from .inference_network import cached_inference_network, inference_network, weights_fingerprint
from .layout import ImageLayout
from .normalization import fit_normalizer
from .predict import logits_to_probabilities

#: Share of pixels whose label must not change in the lower precision.
LABEL_AGREEMENT = 0.995
#: Largest change of a probability allowed in the lower precision, for all but the
#: PROBABILITY_OUTLIERS share of them. A model trained from the starting weights changes
#: a few border pixels by up to 0.05 in bfloat16 (99th percentile 0.01, 99.96 % of labels
#: unchanged); the largest change alone would send it to float32, at half the speed.
PROBABILITY_TOLERANCE = 0.05
PROBABILITY_OUTLIERS = 0.001
#: Side of the probe: the top-left PROBE_SIZE² of the first tile (65,536 pixels is plenty to
#: tell 99.5 % agreement, and keeps the probe near a tenth of a second on two CPU cores).
PROBE_SIZE = 256

_verdicts: weakref.WeakKeyDictionary[nn.Module, dict[Hashable, bool]] = weakref.WeakKeyDictionary()
_verdicts_lock = threading.Lock()


def first_tile(
    image: Any, layout: ImageLayout, model_config: ModelConfig, tile_size: int
) -> np.ndarray | None:
    """The top-left tile of the first plane, normalised with its own statistics, as (1, C, Y, X).

    None when the plane is smaller than the network accepts or holds non-finite values (the
    prediction itself then reports the problem).
    """
    multiple = model_config.min_size
    sides = [min(tile_size, n) // multiple * multiple for n in layout.plane_shape]
    if min(sides) < multiple:
        return None
    index: list[Any] = []
    for letter in layout.axes:
        if letter == "Y":
            index.append(slice(0, sides[0]))
        elif letter == "X":
            index.append(slice(0, sides[1]))
        else:
            index.append(slice(None) if letter == "C" else 0)
    tile = np.asarray(image[tuple(index)])
    kept = [a for a in layout.axes if a in "CYX"]
    tile = (
        tile[np.newaxis] if "C" not in kept else np.transpose(tile, [kept.index(a) for a in "CYX"])
    )
    if tile.dtype.kind == "f" and not np.isfinite(tile).all():
        return None
    tile_layout = ImageLayout("CYX", tuple(tile.shape))
    normalizer = fit_normalizer(tile, tile_layout, model_config.normalization)
    return normalizer(tile)[np.newaxis]


def _probabilities(network: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    with (
        torch.no_grad(),
        torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32),
    ):
        return logits_to_probabilities(network(x)).cpu()


def agreement(
    model: nn.Module,
    tile: np.ndarray,
    device: torch.device,
    dtype: torch.dtype,
    channels_last: bool = True,
) -> tuple[float, float]:
    """(share of equal labels, the 99.9th percentile of the probability changes) between
    ``dtype`` and float32."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.from_numpy(tile).to(device).contiguous(memory_format=memory_format)
    low = cached_inference_network(model, device, dtype, channels_last)
    reference = inference_network(model, device, torch.float32, channels_last)
    was = [low.training, reference.training]
    low.eval()
    reference.eval()
    try:
        p_low = _probabilities(low, x, dtype)
        p_ref = _probabilities(reference, x, torch.float32)
    finally:
        low.train(was[0])
        reference.train(was[1])
    if p_ref.shape[1] == 1:
        labels_low, labels_ref = p_low[:, 0] > 0.5, p_ref[:, 0] > 0.5
    else:
        labels_low, labels_ref = p_low.argmax(1), p_ref.argmax(1)
    same = float((labels_low == labels_ref).float().mean())
    changes = (p_low - p_ref).abs().float().numpy()
    difference = float(np.quantile(changes, 1 - PROBABILITY_OUTLIERS))
    if not np.isfinite(difference):
        return 0.0, float("inf")
    return same, difference


def close_enough(same: float, difference: float) -> bool:
    """Whether an :func:`agreement` result proves the lower precision."""
    return same >= LABEL_AGREEMENT and difference <= PROBABILITY_TOLERANCE


def proven_dtype(
    model: nn.Module,
    model_config: ModelConfig,
    image: Any,
    layout: ImageLayout,
    config: PredictConfig,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.dtype:
    """``dtype`` when it agrees with float32 on this model's first tile, else float32.

    Call it while ``model``'s weights cannot change (the :class:`Segmenter` holds its lock).
    """
    if dtype == torch.float32:
        return dtype
    key = (str(device), dtype, config.channels_last, weights_fingerprint(model))
    with _verdicts_lock:
        known = _verdicts.get(model, {}).get(key)
    if known is None:
        tile = first_tile(image, layout, model_config, min(config.tile_size, PROBE_SIZE))
        if tile is None:
            return torch.float32  # nothing to prove it on; this prediction fails or is tiny
        known = close_enough(*agreement(model, tile, device, dtype, config.channels_last))
        with _verdicts_lock:
            _verdicts[model] = {key: known}  # older weights' verdicts are of no more use
    return dtype if known else torch.float32
