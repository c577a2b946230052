"""Unpainted pixels carry no weight: changing the target under them changes nothing."""

import pytest
import torch

from napari_unetseg.core.losses import masked_loss


@pytest.mark.parametrize("name", ["bce+dice", "dice", "bce", "ce+dice", "ce"])
@pytest.mark.parametrize("n_outputs", [1, 2, 4])
def test_target_under_unpainted_pixels_changes_neither_loss_nor_gradients(name, n_outputs):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, n_outputs, 16, 16, generator=generator)
    n_classes = max(n_outputs, 2)
    target = torch.randint(0, n_classes, (2, 16, 16), generator=generator)
    mask = (torch.rand(2, 16, 16, generator=generator) > 0.7).float()
    other = torch.where(
        mask > 0, target, torch.randint(0, n_classes, target.shape, generator=generator)
    )
    assert not torch.equal(other, target)

    results = []
    for t in (target, other):
        x = logits.clone().requires_grad_(True)
        loss = masked_loss(name, x, t, mask)
        loss.backward()
        results.append((loss.detach(), x.grad.clone()))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    # Unpainted pixels get no gradient at all.
    assert torch.all(results[0][1].permute(1, 0, 2, 3)[:, mask == 0] == 0)


def test_loss_falls_when_predictions_match_the_painted_pixels():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, :4] = 1
    mask = torch.ones(1, 8, 8)
    good = torch.stack([(1 - target) * 5.0, target * 5.0], 1).float()
    bad = good.flip(1)
    for name in ("bce+dice", "dice", "bce"):
        assert masked_loss(name, good, target, mask) < masked_loss(name, bad, target, mask)


def test_nothing_painted_gives_zero_cross_entropy_not_nan():
    logits = torch.randn(1, 2, 8, 8)
    loss = masked_loss("bce", logits, torch.zeros(1, 8, 8, dtype=torch.long), torch.zeros(1, 8, 8))
    assert torch.isfinite(loss) and loss == 0
