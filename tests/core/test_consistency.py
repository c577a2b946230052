"""The consistency term: same answer for a patch and its mirror image, on unpainted pixels."""

from contextlib import nullcontext

import pytest
import torch
from torch import nn

from napari_unetseg.core import Segmenter, TrainConfig
from napari_unetseg.core import train as train_module
from napari_unetseg.core.consistency import CONSISTENCY_FROM, mirror_consistency, mirrored
from napari_unetseg.core.errors import ConfigError
from napari_unetseg.core.synthetic import nuclei_scene


def lopsided_model(dims: int = 2) -> nn.Module:
    """A convolution that looks only to its left: its answer changes when the patch is mirrored."""
    conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(1, 2, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[(0, 0) + (1,) * (dims - 1) + (0,)] = 4.0
    return conv


def term(model, patches, painted):
    logits = model(patches)
    return mirror_consistency(model, patches, logits, painted, nullcontext)


def test_a_model_that_ignores_direction_agrees_with_itself():
    patches = torch.rand(2, 1, 16, 16)
    pointwise = nn.Conv2d(1, 2, 1)
    assert term(pointwise, patches, torch.zeros(2, 16, 16)).item() == pytest.approx(0, abs=1e-7)


def test_a_model_that_sees_direction_is_penalised_on_unpainted_pixels_only():
    torch.manual_seed(0)
    patches = torch.rand(2, 1, 16, 16)
    model = lopsided_model()
    unpainted = term(model, patches, torch.zeros(2, 16, 16))
    assert unpainted.item() > 1e-3
    assert term(model, patches, torch.ones(2, 16, 16)).item() == 0


def test_the_mirrored_view_is_a_fixed_target_without_gradient():
    patches = torch.rand(1, 1, 16, 16)
    model = lopsided_model()
    logits = model(patches).detach()  # no gradient through the patch's own prediction
    value = mirror_consistency(model, patches, logits, torch.zeros(1, 16, 16), nullcontext)
    assert not value.requires_grad


def test_volumes_are_mirrored_in_y_and_x_but_never_in_z():
    volume = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 1, 2, 3, 4)
    assert torch.equal(mirrored(volume), volume.flip((3, 4)))
    assert torch.equal(mirrored(mirrored(volume)), volume)
    patches = torch.rand(1, 1, 4, 8, 8)
    assert term(lopsided_model(3), patches, torch.zeros(1, 4, 8, 8)).item() > 1e-3


def test_weights_are_checked_and_volumes_default_to_off():
    assert TrainConfig().consistency_weight > 0
    assert TrainConfig().volume_consistency_weight == 0
    with pytest.raises(ConfigError, match="consistency_weight"):
        TrainConfig(consistency_weight=-1)
    with pytest.raises(ConfigError, match="volume_consistency_weight"):
        TrainConfig(volume_consistency_weight=float("nan"))


def calls_per_step(monkeypatch, config, spatial_dims=2):
    """Train a tiny model; return, for each step, whether the consistency term was added."""
    calls: list[int] = []
    steps: list[int] = []
    real = train_module.mirror_consistency

    def counting(*args, **kwargs):
        calls.append(len(steps))
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "mirror_consistency", counting)
    scene = nuclei_scene((64, 64), seed=1)
    image, painted = scene.image, scene.painted
    if spatial_dims == 3:
        image = image[None].repeat(4, 0)
        painted = painted[None].repeat(4, 0) * (torch.arange(4) == 1).numpy()[:, None, None]
    seg = Segmenter.create(base_width=4, depth=1, device="cpu", spatial_dims=spatial_dims)
    for event in seg.train_iter(image, painted, config):
        if type(event).__name__ == "StepDone":
            steps.append(event.step)
    return [step in calls for step in range(len(steps))]


def quick(**changes):
    settings = dict(
        max_seconds=None,
        max_epochs=5,
        steps_per_epoch=2,
        batch_size=2,
        patch_size=32,
        volume_patch_size=(4, 32, 32),
        volume_batch_size=1,
    )
    return TrainConfig(**(settings | changes))


def test_the_term_joins_after_the_first_fifth_of_a_run(monkeypatch):
    added = calls_per_step(monkeypatch, quick())
    first = round(CONSISTENCY_FROM * len(added))
    assert len(added) == 10
    assert added == [False] * first + [True] * (len(added) - first)


def test_a_zero_weight_and_a_volume_by_default_leave_the_term_out(monkeypatch):
    assert not any(calls_per_step(monkeypatch, quick(consistency_weight=0)))
    assert not any(calls_per_step(monkeypatch, quick(), spatial_dims=3))
    assert any(calls_per_step(monkeypatch, quick(volume_consistency_weight=1), spatial_dims=3))
