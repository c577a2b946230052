"""Losses on logits with a pixel mask: unpainted pixels (mask 0) carry no weight at all.

One output channel means sigmoid (binary); several mean softmax over classes.
"""

from __future__ import annotations

import math

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
    return probs, onehot.permute(0, 3, 1, 2).to(logits.dtype)


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
    dims = (0, 2, 3)
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

    ``target`` holds class indices (N, H, W); ``mask`` is 1 where a pixel counts, 0 elsewhere.
    """
    name = resolve_loss_name(name, logits.shape[1])
    terms = name.split("+")
    loss = logits.new_zeros(())
    if "bce" in terms or "ce" in terms:
        loss = loss + masked_cross_entropy(logits, target, mask)
    if "dice" in terms:
        loss = loss + masked_soft_dice(logits, target, mask)
    return loss


#: Neighbour offsets (dy, dx) the smoothness term compares: near and a little farther.
SMOOTHNESS_OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1), (0, 3), (3, 0), (2, 2), (2, -2))


def image_aware_smoothness(
    logits: torch.Tensor, image: torch.Tensor, sigma: float = 0.1
) -> torch.Tensor:
    """A relaxed Potts term over every pixel, painted or not: neighbours that look alike
    should get the same class.

    For each pixel pair at the offsets above, ``1 - sum_c p_c(a) p_c(b)`` is weighted by
    ``exp(-|I(a) - I(b)|^2 / 2 sigma^2)`` on a lightly smoothed image, so class borders move
    to where the image changes. This is what teaches the unpainted pixels near the edges,
    where a person's strokes never go.
    """
    if logits.shape[1] == 1:
        fg = torch.sigmoid(logits)
        probs = torch.cat([1 - fg, fg], dim=1)
    else:
        probs = torch.softmax(logits, dim=1)
    smooth = F.avg_pool2d(image.float(), 3, stride=1, padding=1, count_include_pad=False)
    h, w = probs.shape[-2:]
    total = logits.new_zeros(())
    for dy, dx in SMOOTHNESS_OFFSETS:
        ya, yb = slice(0, h - dy), slice(dy, h)
        xa, xb = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        difference = (smooth[:, :, ya, xa] - smooth[:, :, yb, xb]).pow(2).sum(1)
        affinity = torch.exp(-difference / (2 * sigma**2))
        agreement = (probs[:, :, ya, xa] * probs[:, :, yb, xb]).sum(1)
        total = total + (affinity * (1 - agreement)).mean()
    return total / len(SMOOTHNESS_OFFSETS)


def unpainted_entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean prediction entropy (in [0, 1]) over the pixels nobody painted.

    Minimising it moves class borders to where few pixels are, between the clusters the
    image forms (the semi-supervised cluster assumption; Otsu's threshold in one dimension).
    """
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        entropy = -(p * torch.log(p.clamp_min(1e-6)) + (1 - p) * torch.log((1 - p).clamp_min(1e-6)))
        entropy = entropy / math.log(2)
    else:
        log_p = torch.log_softmax(logits, dim=1)
        entropy = -(log_p.exp() * log_p).sum(1) / math.log(logits.shape[1])
    weight = 1 - mask.to(entropy.dtype)
    return (entropy * weight).sum() / weight.sum().clamp_min(1.0)
