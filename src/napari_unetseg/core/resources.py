"""Memory a setting needs, estimated before anything is allocated, and refusals with advice.

A model or a training step far too large for the machine is otherwise accepted and then
killed by the operating system, with all work lost. The estimates build the network on
PyTorch's ``meta`` device, where shapes are computed but no memory is used.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from .config import ModelConfig
from .errors import ConfigError
from .model import UNet

#: Share of the free memory a setting may claim before it is refused.
HEADROOM = 0.9
GIB = 1024**3


def available_memory(device: torch.device | None = None) -> int | None:
    """Bytes free for new allocations on ``device`` (CPU: MemAvailable), or None when unknown."""
    if device is not None and device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
        except RuntimeError:  # pragma: no cover - no CUDA context
            return None
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _meta_model(config: ModelConfig) -> UNet:
    with torch.device("meta"):
        return UNet(config)


def parameter_bytes(config: ModelConfig) -> int:
    """Bytes of a float32 model's weights and buffers, computed without allocating them."""
    model = _meta_model(config)
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * 4 for t in tensors if t.is_floating_point())


def training_bytes(
    model: nn.Module, config: ModelConfig, batch_size: int, patch_size: int | tuple[int, ...]
) -> int:
    """Bytes one float32 training step holds: activations kept for backward, plus weights,
    gradients and the optimiser's two moments (an upper bound: mixed precision needs less).

    The activations are measured on a small probe image and scaled by the number of pixels
    (they are proportional to it). The model runs in eval mode, so its batch-norm statistics
    are not touched; its train/eval flag is put back.
    """
    side = max(32, 2 * config.min_size)
    probe_shape: tuple[int, ...] = (side, side)
    if config.spatial_dims == 3:
        probe_shape = (max(8, 2 * config.min_depth), side, side)
    patch = (patch_size,) * 2 if isinstance(patch_size, int) else tuple(patch_size)
    parameters = {id(p) for p in model.parameters()}
    saved: dict[tuple[int, int], int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in parameters:
            key = (tensor.untyped_storage().data_ptr(), int(tensor.storage_offset()))
            saved[key] = max(saved.get(key, 0), tensor.numel() * tensor.element_size())
        return tensor

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        probe = torch.zeros((1, config.in_channels, *probe_shape), device=device)
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(probe)
    finally:
        model.train(was_training)
    per_image = sum(saved.values()) + out.numel() * 4 * 3  # logits, probabilities, gradient
    scale = batch_size * float(np.prod(patch)) / float(np.prod(probe_shape))
    return int(per_image * scale + 4 * parameter_bytes(config))


def check_memory(needed: int, what: str, advice: str, device: torch.device | None = None) -> None:
    """Refuse with a ConfigError when ``needed`` bytes would not fit in the free memory."""
    free = available_memory(device)
    if free is None or needed <= HEADROOM * free:
        return
    raise ConfigError(
        f"{what} would need about {needed / GIB:.1f} GiB, but only {free / GIB:.1f} GiB of "
        f"{'GPU ' if device is not None and device.type == 'cuda' else ''}memory is free, so "
        f"it was refused before it could crash napari-unetseg. {advice}"
    )
