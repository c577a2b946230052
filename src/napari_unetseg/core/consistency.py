"""Learning from the pixels nobody painted: the same answer for a patch and its mirror image.

A training patch is mostly unpainted, so the loss on the paint says nothing about most of
what the model sees. The consistency term asks the model to give each unpainted pixel the
same class probabilities whether it sees the patch as it is or mirrored in Y and X. The
mirrored view's prediction, mirrored back, is the target and carries no gradient (the
"Pi-model" of Laine and Aila 2017, with a stopped teacher). It costs one forward pass
without gradients per step, about a third of a step.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import nn

from .losses import probabilities

#: The term starts after this fraction of a run: before that the model's answers are noise,
#: and agreeing with noise flattens them.
CONSISTENCY_FROM = 0.2

#: With no planned end (training until stopped), it starts after this many steps.
CONSISTENCY_FROM_STEP = 60


def mirrored(batch: torch.Tensor) -> torch.Tensor:
    """Mirror patches (N, C, ..., Y, X) in Y and X; its own inverse."""
    return batch.flip((-2, -1))


def mirror_consistency(
    model: nn.Module,
    patches: torch.Tensor,
    logits: torch.Tensor,
    painted: torch.Tensor,
    precision: Callable[[], AbstractContextManager[object]],
) -> torch.Tensor:
    """Mean squared difference between the class probabilities of ``patches`` (from their
    ``logits``, with gradient) and of their mirror image (without), on unpainted pixels.

    ``painted`` is the loss mask (N, ..., Y, X): 1 where a pixel is painted. ``precision``
    opens the autocast context the step uses. Zero when every pixel is painted.
    """
    with torch.no_grad(), precision():
        target = probabilities(mirrored(model(mirrored(patches))).float())
    unpainted = (painted == 0).unsqueeze(1).to(torch.float32)
    difference = (probabilities(logits.float()) - target) ** 2
    return (difference * unpainted).sum() / unpainted.sum().clamp_min(1.0)
