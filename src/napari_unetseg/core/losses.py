"""Losses on logits with a pixel mask: unpainted pixels (mask 0) carry no weight at all.

One output channel means sigmoid (binary); several mean softmax over classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ConfigError

LOSS_NAMES = ("bce+dice", "dice", "bce", "ce+dice", "ce")


def _probabilities_and_onehot(
    logits: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.shape[1] == 1:
        return torch.sigmoid(logits), target.unsqueeze(1).to(logits.dtype)
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target.clamp(0, logits.shape[1] - 1), logits.shape[1])
    return probs, onehot.movedim(-1, 1).to(logits.dtype)


def masked_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean BCE (one channel) or cross-entropy (several) over the pixels where ``mask`` is set."""
    weight = mask.to(logits.dtype)
    if logits.shape[1] == 1:
        per_pixel = F.binary_cross_entropy_with_logits(
            logits[:, 0], target.to(logits.dtype), reduction="none"
        )
    else:
        per_pixel = F.cross_entropy(logits, target.clamp(0, logits.shape[1] - 1), reduction="none")
    return (per_pixel * weight).sum() / weight.sum().clamp_min(1.0)


def masked_soft_dice(
    logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, smooth: float = 1.0
) -> torch.Tensor:
    """1 - mean soft Dice over classes (foreground only for one channel), masked pixels only."""
    probs, onehot = _probabilities_and_onehot(logits, target)
    weight = mask.unsqueeze(1).to(logits.dtype)
    dims = (0, *range(2, logits.ndim))  # every axis but the classes (2-D or 3-D)
    intersection = (probs * onehot * weight).sum(dims)
    total = (probs * weight).sum(dims) + (onehot * weight).sum(dims)
    dice = (2 * intersection + smooth) / (total + smooth)
    return 1 - dice.mean()


def resolve_loss_name(name: str, n_outputs: int) -> str:
    if name == "auto":
        return "bce+dice" if n_outputs <= 2 else "ce+dice"
    if name not in LOSS_NAMES:
        raise ConfigError(f"loss {name!r} is not one of {', '.join(LOSS_NAMES)}.")
    return name


def masked_loss(
    name: str, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The loss called ``name``; 'bce' and 'ce' are the same term (cross-entropy on logits).

    ``target`` holds class indices (N, H, W) or (N, D, H, W); ``mask`` is 1 where a pixel
    counts, 0 elsewhere.
    """
    name = resolve_loss_name(name, logits.shape[1])
    terms = name.split("+")
    loss = logits.new_zeros(())
    if "bce" in terms or "ce" in terms:
        loss = loss + masked_cross_entropy(logits, target, mask)
    if "dice" in terms:
        loss = loss + masked_soft_dice(logits, target, mask)
    return loss
