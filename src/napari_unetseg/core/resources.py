"""Memory a setting needs, estimated before anything is allocated, and refusals with advice.

A model or a training step far too large for the machine is otherwise accepted and then
killed by the operating system, with all work lost. The estimates build the network on
PyTorch's ``meta`` device, where shapes are computed but no memory is used.
"""

from __future__ import annotations

import os

import torch

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


def training_bytes(config: ModelConfig, batch_size: int, patch_size: int) -> int:
    """Bytes one float32 training step holds: activations kept for backward, plus weights,
    gradients and the optimiser's two moments (an upper bound: mixed precision needs less)."""
    model = _meta_model(config).train()
    saved: dict[int, torch.Tensor] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[id(tensor)] = tensor
        return tensor

    x = torch.empty((batch_size, config.in_channels, patch_size, patch_size), device="meta")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(x.requires_grad_(False))
    activations = sum(t.numel() * t.element_size() for t in saved.values())
    activations += out.numel() * 4 * 3  # logits, probabilities and their gradient
    return int(activations + 4 * parameter_bytes(config))


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
